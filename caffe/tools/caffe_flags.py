"""The `caffe` command's flags: BVLC's tools/caffe.cpp ones, glog's, and pycaffe's own.

Other commands' flags are defined here too (``flags.define`` in :func:`flag_set`), so that
`caffe --help` lists them all and gflags' rule holds: a flag is known to every command.
"""
import logging
import textwrap
import types

from .. import _version
from . import gflags
from .glog import log_to_stderr

# glog's severities (-minloglevel, -stderrthreshold) as Python logging levels
GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def _glog_level(n):
    return GLOG_LEVELS.get(n, logging.CRITICAL if n > 3 else logging.INFO)


# -- flags ----------------------------------------------------------------------------------
ACTIONS = ("stop", "snapshot", "none")      # caffe.solvers' signal actions (checked in tests)
BVLC_VERSION = "1.0.0"


def flag_set(commands, tools):
    """The flags of BVLC's tools/caffe.cpp (same names, types, defaults), glog's, and ours."""
    flags = gflags.FlagSet(
        "caffe", usage="command line brew\nusage: caffe <command> <args>\n\ncommands:\n" +
        "\n".join(f"  {c:<14}{d}" for c, d in commands.items()) +
        "\n\ntools (BVLC's separate programs; also `caffe <tool> --help`):\n" +
        textwrap.fill(", ".join(tools), 96, initial_indent="  ", subsequent_indent="  "),
        version=f"{BVLC_VERSION} (pycaffe {_version.__version__})")
    # BVLC's caffe sets -alsologtostderr before reading the command line: it logs to stderr.
    flags.flags["alsologtostderr"].default = True
    d = flags.define
    d("gpu", str, "", "Optional; run in GPU mode on given device IDs separated by ','. Use "
      "'-gpu all' to run on all available GPUs (training: one data-parallel worker each)")
    d("solver", str, "", "The solver definition protocol buffer text file.")
    d("model", str, "", "The model definition protocol buffer text file.")
    d("phase", str, "", "Optional; network phase (TRAIN or TEST). Only used for 'time'.")
    d("level", int, 0, "Optional; network level.")
    d("stage", str, "", "Optional; network stages (not to be confused with phase), separated "
      "by ','.")
    d("snapshot", str, "", "Optional; the snapshot solver state to resume training.")
    d("weights", str, "", "Optional; the pretrained weights to initialize finetuning, "
      "separated by ','. Cannot be set simultaneously with snapshot.")
    d("iterations", int, 50, "The number of iterations to run.")
    d("sigint_effect", str, "stop", "Optional; action to take when a SIGINT signal is "
      "received: snapshot, stop or none.", choices=ACTIONS)
    d("sighup_effect", str, "snapshot", "Optional; action to take when a SIGHUP signal is "
      "received: snapshot, stop or none.", choices=ACTIONS)
    d("workers", int, 0, "pycaffe: train with N data-parallel worker processes (CPU: gloo); "
      "-gpu lists give one per GPU", module="pycaffe")
    d("precision", str, "fp32", "pycaffe: compute in fp32, bf16 or fp16 (train: float32 master "
      "weights and snapshots; fp16 with dynamic loss scaling)", module="pycaffe",
      choices=("fp32", "bf16", "fp16"))
    d("overwrite_snapshots", bool, False, "pycaffe: accepted from older scripts and ignored: "
      "train replaces snapshot files as BVLC does (with a WARNING for files it did not write)",
      module="pycaffe")
    d("allow_python_layers", bool, True, "pycaffe: false refuses models with Python layers "
      "(they run code the model names); use for models you do not trust", module="pycaffe")
    d("log_level", str, "", "pycaffe: a Python logging level (DEBUG, INFO, ...); overrides "
      "-minloglevel", module="pycaffe")
    return flags


def parse(argv, commands, tools):
    """(namespace of flag values plus ``command``, ``positional`` and ``argv``, the FlagSet)."""
    flags = flag_set(commands, tools)
    values, positional = flags.parse(argv)
    args = types.SimpleNamespace(**values)
    args.command = positional[0] if positional else ""
    args.positional = positional[1:]
    args.argv = list(argv)           # parallel training reruns the command per worker
    return args, flags


def configure_logging(args):
    level = _glog_level(args.minloglevel)
    if args.v > 0 and args.minloglevel <= 0:
        level = logging.DEBUG            # VLOG(n) lines: pycaffe's debug messages
    if args.log_level:
        level = getattr(logging, str(args.log_level).upper(), level)
    to_stderr = args.logtostderr or args.alsologtostderr
    threshold = logging.NOTSET if to_stderr else _glog_level(args.stderrthreshold)
    log_to_stderr(level, threshold, prefix=args.log_prefix)
