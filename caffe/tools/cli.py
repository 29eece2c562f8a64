"""Command-line plumbing shared by the data tools: gflags-style flags on argparse, glog logging.

BVLC's tools took gflags, so scripts call them as `-backend lmdb`, `--gray`, `--resize_height=20`,
`-shuffle=true` or `--nogray`; gflags_argv rewrites all of these into argparse's `--flag=value`.
Boolean flags never consume the next argument (as in gflags: `--gray false` is two arguments).
"""
import argparse
import logging
import re
import sys

from ..errors import CaffeError
from .glog import log_to_stderr

log = logging.getLogger("caffe")

_FLAG = re.compile(r"--?([A-Za-z][A-Za-z0-9_]*)(?:=(.*))?", re.S)
_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")
# glog's own flags, accepted and ignored (we always log to stderr).
GLOG_FLAGS = ("logtostderr", "alsologtostderr", "colorlogtostderr")
GLOG_VALUE_FLAGS = ("v", "minloglevel", "stderrthreshold", "log_dir")


def parse_bool(text):
    value = str(text).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"'{text}' is not a boolean (true or false)")


def gflags_argv(argv, bool_flags=()):
    """Rewrite gflags spellings into argparse's: every long flag becomes --name[=value]."""
    bools = set(bool_flags) | set(GLOG_FLAGS)
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + list(argv[i:])
        m = _FLAG.fullmatch(arg)
        if not m or (len(m.group(1)) == 1 and not arg.startswith("--") and m.group(2) is None):
            out.append(arg)                 # positional, negative number or a short option (-h)
            continue
        name, value = m.groups()
        if name in bools:
            out.append(f"--{name}={'true' if value is None else value}")
        elif value is None and name.startswith("no") and name[2:] in bools:
            out.append(f"--{name[2:]}=false")
        else:
            out.append(f"--{name}" if value is None else f"--{name}={value}")
    return out


class Parser(argparse.ArgumentParser):
    """argparse with gflags spellings and boolean flags declared by add_bool."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("allow_abbrev", False)   # gflags has no prefix abbreviations
        super().__init__(*args, **kwargs)
        self.bool_flags = []
        for name in GLOG_FLAGS:
            self.add_argument(f"--{name}", type=parse_bool, help=argparse.SUPPRESS)
        for name in GLOG_VALUE_FLAGS:
            self.add_argument(f"--{name}", help=argparse.SUPPRESS)

    def add_bool(self, name, default=False, help=""):
        self.bool_flags.append(name)
        self.add_argument(f"--{name}", type=parse_bool, default=default, metavar="true|false",
                          help=f"{help} (default {str(default).lower()})")

    def parse(self, argv=None):
        argv = sys.argv[1:] if argv is None else list(argv)
        return self.parse_args(gflags_argv(argv, self.bool_flags))


def setup_logging():
    """glog-format log lines on stderr, as BVLC's tools print them."""
    log_to_stderr()


def run(body, args):
    """Run a tool body; bad input is reported as one error line and exit status 1."""
    try:
        return body(args) or 0
    except CaffeError as e:
        log.error("%s", e)
        return 1
