"""Compile the caffe_ MEX gateway against the running Python, for Octave or MATLAB.

The output folder is self-contained: the +caffe package (copied from this one) and the
compiled gateway beside it (caffe_.mex for Octave, caffe_.mexa64 / .mexmaci64 for MATLAB),
so one `addpath` gives the whole of matcaffe. The gateway sits at the top of that folder, not
in +caffe/private as in BVLC: Octave does not look in a package's private folder from the
methods of a classdef class.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from ..errors import CaffeError

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "caffe_.c"
PACKAGE = HERE / "+caffe"
OCTAVE_MEX = "caffe_.mex"


class BuildError(CaffeError):
    """The gateway could not be compiled (missing compiler, headers or libpython)."""


def default_folder():
    """Where `build` writes and `path` looks: $PYCAFFE_MATLAB_DIR, else the user's cache."""
    chosen = os.environ.get("PYCAFFE_MATLAB_DIR")
    if chosen:
        return Path(chosen)
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "pycaffe" / "matlab"


def python_link():
    """(include dir, library dir, library name) of this interpreter's shared libpython."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise BuildError(f"{sys.executable} was built without a shared libpython "
                         "(--enable-shared); the MEX gateway embeds Python and needs one. Use "
                         "a Python with libpython3.X.so (a distribution's python3, or pyenv "
                         "with PYTHON_CONFIGURE_OPTS=--enable-shared)")
    include = sysconfig.get_paths()["include"]
    libdir = sysconfig.get_config_var("LIBDIR")
    name = f"python{sysconfig.get_config_var('LDVERSION')}"
    if not Path(include, "Python.h").is_file():
        raise BuildError(f"Python.h is not in {include}: install this Python's development "
                         f"headers (python3-dev)")
    return include, libdir, name


def _config_header(folder):
    # The paths go through a header, not -D flags: mkoctfile and mex re-quote their arguments.
    def c_string(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    root = str(HERE.parents[1])
    Path(folder, "caffe_config.h").write_text(
        f"#define PYCAFFE_PYTHON {c_string(sys.executable)}\n"
        f"#define PYCAFFE_SOURCE {c_string(root)}\n")


def _copy_package(out):
    target = out / "+caffe"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("*.mex*", "*.o"))


def _run(command, what):
    try:
        done = subprocess.run(command, capture_output=True, text=True)
    except FileNotFoundError:
        raise BuildError(f"{command[0]} not found: {what}") from None
    if done.returncode != 0:
        raise BuildError(f"compiling {SOURCE.name} failed ({' '.join(command)}):\n"
                         f"{(done.stdout + done.stderr)[-4000:]}")


def build(out=None, host="octave", matlabroot=None, mkoctfile="mkoctfile"):
    """Compile the gateway into `out` (default_folder()) with the +caffe package; returns out."""
    out = Path(out) if out is not None else default_folder()
    out.mkdir(parents=True, exist_ok=True)
    include, libdir, lib = python_link()
    with tempfile.TemporaryDirectory() as tmp:
        _config_header(tmp)
        flags = [f"-I{tmp}", f"-I{include}", f"-L{libdir}", f"-l{lib}", "-ldl"]
        if host == "octave":
            command = [mkoctfile, "--mex", "-o", str(out / OCTAVE_MEX), str(SOURCE), *flags,
                       f"-Wl,-rpath,{libdir}"]
            _run(command, "install Octave's development files (apt-get install liboctave-dev)")
        elif host == "matlab":
            if matlabroot is None:
                raise BuildError("--matlab needs MATLABROOT (the folder with bin/mex)")
            mex = Path(matlabroot, "bin", "mex")
            command = [str(mex), "-R2018a", "-output", "caffe_", "-outdir", str(out),
                       str(SOURCE), *flags, f"LDFLAGS=$LDFLAGS -Wl,-rpath,{libdir}"]
            _run(command, f"no MATLAB mex compiler under {matlabroot}")
        else:
            raise BuildError(f"unknown host '{host}' (octave or matlab)")
    _copy_package(out)
    return out


def built(out=None):
    out = Path(out) if out is not None else default_folder()
    return out if (out / "+caffe").is_dir() and any(out.glob("caffe_.mex*")) else None
