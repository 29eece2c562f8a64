"""What must happen before torch loads inside MATLAB or Octave (imported first by the bridge).

Two troubles of a Python embedded in a host that has its own numerical libraries loaded:

* BLAS: the host (Octave's OpenBLAS, MATLAB's ILP64 MKL) has already put `sgemm_` and friends
  in the global symbol scope, and libtorch's calls would bind to those, not to torch's own
  BLAS (in Octave the results then differ from pycaffe's by ~1e-7; MATLAB's 64-bit-integer
  BLAS would be plainly wrong). Importing torch with RTLD_DEEPBIND makes its libraries look up
  their own dependencies first. The same holds beyond BLAS: Octave's libhdf5 1.10 took the
  place of h5py's own HDF5 (HDF5Data layers then failed with "Not a datatype"), so every
  extension module loads that way in the host.
* OpenMP: Octave loads libgomp when it starts, and torch's wheel brings a libgomp.so.1 of the
  same name, so torch uses the one already loaded, configured from the environment Octave
  started with. Without OMP_WAIT_POLICY=PASSIVE there, torch's idle threads spin and steal
  the cores: a LeNet forward took 106 ms instead of 5.8 ms on two busy cores. pycaffe's own
  choice (caffe.threads) comes too late for that library, so `python -m caffe.matlab octave|matlab`
  starts the host with the variables set, and WARNINGS says so when the host was started
  without them (caffe_ shows it once, as warning caffe:threads).
"""
import logging
import os
import sys

WARNINGS: "list[tuple[str, str]]" = []    # (identifier, message) for caffe_ to show


def initial_environment(path="/proc/self/environ"):
    """The environment the process was started with (what a library loaded at start-up read);
    None where /proc is not there."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep:
            env[os.fsdecode(name)] = os.fsdecode(value)
    return env


def loaded_libraries(path="/proc/self/maps"):
    try:
        with open(path) as f:
            return {line.split()[-1].rsplit("/", 1)[-1] for line in f if "/" in line}
    except OSError:
        return set()


def thread_warning(initial, libraries):
    """The warning for a host that loaded libgomp before us without a passive wait policy."""
    if initial is None or not any(n.startswith("libgomp") for n in libraries):
        return None
    policy = initial.get("OMP_WAIT_POLICY", "").upper()
    if policy == "PASSIVE":
        return None
    return ("the host loaded OpenMP (libgomp) before caffe and was started without "
            "OMP_WAIT_POLICY=PASSIVE: torch's idle threads will spin, which makes caffe many "
            "times slower on a busy machine. Start it with `python -m caffe.matlab octave` "
            "(or matlab), or with OMP_WAIT_POLICY=PASSIVE in its environment.")


def _deepbind_from_now_on():
    """Every extension module loaded from now on (torch, h5py, lmdb, Pillow's, ...) binds to
    the libraries it brought, not to the host's of the same name."""
    sys.setdlopenflags(sys.getdlopenflags() | getattr(os, "RTLD_DEEPBIND", 0))


def prepare():
    """Run once, in the host, before the bridge imports anything that loads torch."""
    warning = thread_warning(initial_environment(), loaded_libraries())
    if warning:
        WARNINGS.append(("caffe:threads", warning))
    from .. import threads
    threads.configure()         # thread count and policy for what loads after us
    _deepbind_from_now_on()
    import torch  # noqa: F401
    # BVLC's matcaffe showed Caffe's glog lines (a solver's progress) on stderr; so do we,
    # from the level GLOG_minloglevel names (0 INFO, 1 WARNING, 2 ERROR), as glog's.
    # The host does not flush Python's stdout: print() in a Python layer shows per line.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    from ..tools.glog import log_to_stderr
    levels = {"0": logging.INFO, "1": logging.WARNING, "2": logging.ERROR, "3": logging.CRITICAL}
    log_to_stderr(levels.get(os.environ.get("GLOG_minloglevel", "0"), logging.INFO))


if getattr(sys, "_matcaffe_host", False):
    prepare()
