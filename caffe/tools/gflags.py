"""gflags' command-line conventions, as BVLC's `caffe` and its tools take them.

Spellings: ``-flag value``, ``--flag value``, ``-flag=value``, ``--flag=value``; booleans as
``-flag``, ``-noflag``, ``-flag=false`` (true/false, t/f, yes/no, y/n, 1/0) and never taking
the next argument; ``--`` ends the flags. Flags may come before or after the positional
arguments. A name must be spelled out in full (no prefix abbreviations); an unknown one is
``ERROR: unknown command line flag 'name'``. gflags' own flags: ``-flagfile`` (one flag per
line, ``#`` comments, nested files), ``-fromenv``/``-tryfromenv`` (``FLAGS_name``
variables), ``-undefok``, ``--help``/``--helpfull``/``--helpshort``, ``--version``.
glog's flags (:data:`GLOG_FLAGS`) default from their ``GLOG_<name>`` environment variables,
as glog reads them.

The `caffe` command parses with FlagSet; the data tools (convert_imageset, ...) with Parser, an
argparse front end for their positional arguments that reads the same spellings and values.
"""
import argparse
import contextlib
import logging
import os
import re
import stat
import sys

from ..errors import CaffeError
from .glog import log_to_stderr

# A flag file holds a few lines of flags; anything larger is not one (-flagfile=/dev/zero).
MAX_FLAGFILE_BYTES = 1 << 20
_TRUE, _FALSE = ("true", "t", "yes", "y", "1"), ("false", "f", "no", "n", "0")


class FlagError(Exception):
    """A command line gflags would refuse (the message is gflags' own wording)."""


class HelpRequested(Exception):
    """--help, --helpfull, --helpshort or --version: print ``text`` and exit with ``status``."""

    def __init__(self, text, status):
        super().__init__(text)
        self.text, self.status = text, status


def parse_bool(text, name="?"):
    value = str(text).lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise FlagError(f"ERROR: illegal value '{text}' specified for bool flag '{name}'")


class Flag:
    """One flag: its type (bool, int, float or str), default, help and module (for --help)."""

    def __init__(self, name, kind, default, help, module, choices=None):
        self.name, self.kind, self.default, self.help = name, kind, default, help
        self.module, self.choices = module, choices

    def convert(self, text):
        if self.kind is bool:
            return parse_bool(text, self.name)
        try:
            value = self.kind(text)
        except ValueError:
            raise FlagError(f"ERROR: illegal value '{text}' specified for "
                            f"{self.kind.__name__} flag '{self.name}'") from None
        if self.choices is not None and value not in self.choices:
            raise FlagError(f"ERROR: failed validation of new value '{text}' for flag "
                            f"'{self.name}' (one of: {', '.join(map(str, self.choices))})")
        return value

    def describe(self):
        kind = {bool: "bool", int: "int32", float: "double", str: "string"}[self.kind]
        default = str(self.default).lower() if self.kind is bool else repr(self.default) \
            if self.kind is str else str(self.default)
        default = default.replace("'", '"')
        return f"    -{self.name} ({self.help}) type: {kind} default: {default}"


# glog's flags and their defaults (GLOG_<name> in the environment overrides the default).
GLOG_FLAGS = [
    ("logtostderr", bool, False, "log messages go to stderr instead of logfiles"),
    ("alsologtostderr", bool, False, "log messages go to stderr in addition to logfiles"),
    ("colorlogtostderr", bool, False, "color messages logged to stderr (if supported by "
     "terminal)"),
    ("stderrthreshold", int, 2, "log messages at or above this level are copied to stderr in "
     "addition to logfiles. This flag obsoletes --alsologtostderr."),
    ("minloglevel", int, 0, "Messages logged at a lower level than this don't actually get "
     "logged anywhere"),
    ("log_dir", str, "", "If specified, logfiles are written into this directory instead of "
     "the default logging directory."),
    ("log_prefix", bool, True, "Prepend the log prefix to the start of each log line"),
    ("v", int, 0, "Show all VLOG(m) messages for m <= this. Overridable by --vmodule."),
    ("vmodule", str, "", "per-module verbose level (accepted; pycaffe has no VLOG sites)"),
    ("logbuflevel", int, 0, "Buffer log messages logged at this level or lower (accepted)"),
    ("logbufsecs", int, 30, "Buffer log messages for at most this many seconds (accepted)"),
    ("log_link", str, "", "Put additional links to the log files in this directory "
     "(accepted)"),
    ("max_log_size", int, 1800, "approx. maximum log file size (in MB) (accepted)"),
    ("stop_logging_if_full_disk", bool, False, "Stop attempting to log to disk if the disk "
     "is full (accepted)"),
    ("drop_log_memory", bool, True, "Drop in-memory buffers of log contents (accepted)"),
]
GFLAGS_BUILTIN = ("flagfile", "fromenv", "tryfromenv", "undefok", "help", "helpfull",
                  "helpshort", "helpxml", "helpmatch", "helpon", "helppackage", "version")


class FlagSet:
    """The flags one program defines; :meth:`parse` reads a command line against them."""

    def __init__(self, program, usage="", version=""):
        self.program, self.usage, self.version = program, usage, version
        self.flags = {}
        for name, kind, default, text in GLOG_FLAGS:
            env = os.environ.get(f"GLOG_{name}")
            if env is not None:
                try:
                    default = Flag(name, kind, default, text, "").convert(env)
                except FlagError:
                    pass        # glog ignores a malformed GLOG_ variable the same way
            self.define(name, kind, default, text, module="glog")

    def define(self, name, kind, default, help, module="main", choices=None):
        self.flags[name] = Flag(name, kind, default, help, module, choices)
        return self.flags[name]

    # -- parsing --------------------------------------------------------------------------------
    def parse(self, argv):
        """(values: {name: value}, positional arguments). Raises FlagError or HelpRequested."""
        values = {name: flag.default for name, flag in self.flags.items()}
        positional, undefok, unknown, requests = [], set(), [], []
        self._parse_into(list(argv), values, positional, undefok, unknown, requests, depth=0)
        unknown = [name for name in unknown if name not in undefok]
        if unknown:
            raise FlagError(f"ERROR: unknown command line flag '{unknown[0]}'")
        for request in requests:
            self._help(request)
        return values, positional

    def _parse_into(self, args, values, positional, undefok, unknown, requests, depth):
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg == "--":
                positional.extend(args[i:])
                return
            if not arg.startswith("-") or arg == "-" or _is_number(arg):
                positional.append(arg)
                continue
            name, eq, value = arg.lstrip("-").partition("=")
            if not eq:
                value = None
            if name in GFLAGS_BUILTIN:
                if value is None and name in ("flagfile", "fromenv", "tryfromenv", "undefok",
                                              "helpmatch", "helpon"):
                    if i >= len(args):
                        raise FlagError(f"ERROR: flag '{arg}' is missing its argument")
                    value, i = args[i], i + 1
                self._builtin(name, value, values, positional, undefok, unknown, requests, depth)
                continue
            flag = self.flags.get(name)
            if flag is None and name.startswith("no") and value is None:
                negated = self.flags.get(name[2:])
                if negated is not None and negated.kind is bool:
                    values[negated.name] = False
                    continue
            if flag is None:
                unknown.append(name)
                # gflags cannot tell whether the next word is this flag's value; an -undefok
                # flag takes only the -flag=value form.
                continue
            if flag.kind is bool:
                values[name] = True if value is None else flag.convert(value)
                continue
            if value is None:
                if i >= len(args):
                    raise FlagError(f"ERROR: flag '{arg}' is missing its argument; flag "
                                    f"description: {flag.help}")
                value, i = args[i], i + 1
            values[name] = flag.convert(value)

    def _builtin(self, name, value, values, positional, undefok, unknown, requests, depth):
        if name == "flagfile":
            for path in filter(None, (value or "").split(",")):
                self._parse_into(_read_flagfile(path, depth), values, positional, undefok,
                                 unknown, requests, depth + 1)
        elif name in ("fromenv", "tryfromenv"):
            for flag_name in filter(None, (value or "").split(",")):
                if flag_name not in self.flags:
                    raise FlagError(f"ERROR: unknown command line flag '{flag_name}' "
                                    f"(via --{name})")
                env = os.environ.get(f"FLAGS_{flag_name}")
                if env is None:
                    if name == "fromenv":
                        raise FlagError(f"ERROR: FLAGS_{flag_name} not found in environment")
                    continue
                values[flag_name] = self.flags[flag_name].convert(env)
        elif name == "undefok":
            undefok.update(filter(None, (value or "").split(",")))
        elif value is None or parse_bool(value, name):
            requests.append(name)

    # -- help --------------------------------------------------------------------------------
    def help_text(self, modules=None):
        lines = [f"{self.program}: {self.usage}".rstrip(), ""]
        groups = {}
        for flag in self.flags.values():
            if modules is None or flag.module in modules:
                groups.setdefault(flag.module, []).append(flag)
        order = {"main": 0, "pycaffe": 1, "glog": 3}
        for module, flags in sorted(groups.items(), key=lambda kv: order.get(kv[0], 2)):
            title = "tools/caffe.cpp" if module == "main" else "glog" if module == "glog" \
                else module
            lines.append(f"  Flags from {title}:")
            lines.extend(flag.describe() for flag in sorted(flags, key=lambda f: f.name))
            lines.append("")
        return "\n".join(lines)

    def _help(self, request):
        if request == "version":
            raise HelpRequested(f"{self.program} version {self.version}", 0)
        if request == "helpshort":
            raise HelpRequested(self.help_text(modules={"main"}), 1)
        raise HelpRequested(self.help_text(), 1)


def _is_number(arg):
    try:
        float(arg)
    except ValueError:
        return False
    return True


def _read_flagfile(path, depth):
    if depth > 16:
        raise FlagError(f"ERROR: --flagfile nesting is too deep at '{path}'")
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as e:
        raise FlagError(f"ERROR: can't open flagfile '{path}': {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            # /dev/zero or a FIFO would be read without end.
            raise FlagError(f"ERROR: flagfile '{path}' is not a regular file")
        data = f.read(MAX_FLAGFILE_BYTES + 1)
    if len(data) > MAX_FLAGFILE_BYTES:
        raise FlagError(f"ERROR: flagfile '{path}' is larger than {MAX_FLAGFILE_BYTES} bytes "
                        f"(caffe.tools.gflags.MAX_FLAGFILE_BYTES)")
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise FlagError(f"ERROR: flagfile '{path}' is not UTF-8 text (byte {e.start})") from None
    args = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("-"):
            # gflags reads lines without a leading '-' as filenames the flags apply to
            continue
        args.append(line)
    return args


def exit_on(error):
    """Print a FlagError/HelpRequested as gflags does and return the exit status."""
    if isinstance(error, HelpRequested):
        with contextlib.suppress(BrokenPipeError):   # `caffe --help | head`
            print(error.text)      # gflags prints help and version on stdout
        return error.status
    print(str(error), file=sys.stderr)
    return 1


# -- the data tools' front end: argparse (positional arguments, sub-commands) reading gflags'
# spellings and values -----------------------------------------------------------------------
# BVLC's tools took gflags, so scripts call them as `-backend lmdb`, `--gray`,
# `--resize_height=20`, `-shuffle=true` or `--nogray`; gflags_argv rewrites all of these into
# argparse's `--flag=value`. Boolean flags never consume the next argument (as in gflags:
# `--gray false` is two arguments).
log = logging.getLogger("caffe")

_FLAG = re.compile(r"--?([A-Za-z][A-Za-z0-9_]*)(?:=(.*))?", re.S)
# glog's own flags, accepted and ignored by the data tools (they always log to stderr).
GLOG_BOOL_FLAGS = tuple(name for name, kind, _, _ in GLOG_FLAGS if kind is bool)
GLOG_VALUE_FLAGS = tuple(name for name, kind, _, _ in GLOG_FLAGS if kind is not bool)


def bool_arg(text):
    """parse_bool as an argparse type: a bad value is argparse's usage error."""
    try:
        return parse_bool(text)
    except FlagError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a boolean (true or false)") from None


def gflags_argv(argv, bool_flags=()):
    """Rewrite gflags spellings into argparse's: every long flag becomes --name[=value]."""
    bools = set(bool_flags) | set(GLOG_BOOL_FLAGS)
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
        for name in GLOG_BOOL_FLAGS:
            self.add_argument(f"--{name}", type=bool_arg, help=argparse.SUPPRESS)
        for name in GLOG_VALUE_FLAGS:
            self.add_argument(f"--{name}", help=argparse.SUPPRESS)

    def add_bool(self, name, default=False, help=""):
        self.bool_flags.append(name)
        self.add_argument(f"--{name}", type=bool_arg, default=default, metavar="true|false",
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


def tool_main(parser, body):
    """A data tool's main(argv=None): glog-format logging, flags, the body run by run()."""
    def main(argv=None):
        setup_logging()
        return run(body, parser().parse(argv))
    return main
