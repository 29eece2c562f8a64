"""How pycaffe starts Python child processes: nothing in the user's working folder is imported.

`python -m module` and `python -c code` put the current folder first on the child's sys.path,
so a `numpy.py` or a `grpc_tools/` folder where the user runs `caffe` would run in every child
(the training workers, protoc). Every Python child pycaffe starts goes through
:func:`python_module_command` and :func:`child_env`:

* Python 3.11+: ``python -P -m module`` (no unsafe path entry) and ``PYTHONSAFEPATH=1`` in the
  environment, which the child's own children (multiprocessing's spawn and forkserver, which
  pass the interpreter flags on too) inherit;
* Python 3.10 (no ``-P``): ``python -c BOOTSTRAP module ...``, where BOOTSTRAP removes the
  working-folder entry from sys.path before runpy runs the module as ``__main__``.

PYTHONPATH and the user's site-packages stay as they are (``-I`` would drop them, and with
them an installed or editable pycaffe), so pycaffe and its dependencies import as in the
parent.
"""
import os
import sys

SAFE_PATH_FLAG = sys.version_info >= (3, 11)

# sys.path[0] is '' for `python -c`: removed before anything else is imported.
_BOOTSTRAP = ("import sys\n"
              "if sys.path and sys.path[0] in ('', '.'):\n"
              "    del sys.path[0]\n"
              "import runpy\n"
              "sys.argv = sys.argv[1:]\n"
              "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n")


def python_module_command(module, *args):
    """The argv that runs `python -m module args` without the working folder on sys.path."""
    if SAFE_PATH_FLAG:
        return [sys.executable, "-P", "-m", module, *args]
    return [sys.executable, "-c", _BOOTSTRAP, module, *args]


def child_env(env=None):
    """A copy of `env` (default os.environ) for a Python child: PYTHONSAFEPATH=1 set."""
    out = dict(os.environ if env is None else env)
    out["PYTHONSAFEPATH"] = "1"
    return out


__all__ = ["child_env", "python_module_command"]
