"""Python layers written for Python 2 (py-faster-rcnn's `lib/`, the forks' example layers) run
unchanged: their modules are translated to Python 3 as they are imported.

Most published Python layers date from pycaffe's Python 2 years: print statements, xrange,
dict.iteritems, implicit relative imports, `/` between integers meaning floor division,
`np.float` and float slice bounds that NumPy has since removed, and `yaml.load` of the param_str.
The user's files stay as they are on disk. When a Python layer's module fails to compile as
Python 3, the sys.path folder that holds it (py-faster-rcnn's `lib/`) is marked as Python 2,
and every module imported from that folder from then on is translated in memory:

* fissix (the maintained fork of the standard library's lib2to3) applies 2to3's fixers;
* four fixers of ours restore the semantics 2to3 leaves to a human: classic division
  (`a / b` floors when both are integers, as Python 2 did), the NumPy type aliases removed in
  NumPy 1.24 (`np.float` is `float`), float slice bounds (NumPy before 1.12 truncated them),
  and one-argument `yaml.load` becomes `yaml.safe_load`: a model's param_str is data, and
  loading it never constructs Python objects.

Nothing is written next to the user's files (no .pyc). ``caffe.set_python2_layers(True)``
translates every Python-layer module's folder, for Python 2 code that happens to compile as
Python 3; ``False`` turns translation off. The environment variable PYCAFFE_PYTHON2_LAYERS
(``auto``, ``1`` or ``0``) sets the same for the `caffe` command.
"""
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import operator
import os
import sys
import threading

import numpy as np

from .._optional import require
from ..errors import CaffeError

log = logging.getLogger("caffe")

_MODES = {"auto": "auto", "1": True, "true": True, "on": True, "0": False, "false": False,
          "off": False}
_state = {"mode": _MODES.get(os.environ.get("PYCAFFE_PYTHON2_LAYERS", "auto").lower(), "auto")}
_roots: list[str] = []                     # folders whose modules are Python 2
_lock = threading.RLock()
_tool: list = []                      # the RefactoringTool, built once


class Python2Error(CaffeError, SyntaxError):
    """A Python 2 module could not be translated."""


def set_python2_layers(mode):
    """Translate Python-layer modules written for Python 2: "auto" (the default: when one
    does not compile as Python 3), True (always) or False (never)."""
    if mode not in ("auto", True, False):
        raise ValueError(f"set_python2_layers: mode must be 'auto', True or False, not {mode!r}")
    _state["mode"] = mode


def python2_layers():
    return _state["mode"]


def python2_roots():
    """The folders whose modules are translated from Python 2."""
    return list(_roots)


# ---- the semantics 2to3 leaves to a human, as run-time helpers ------------------------------

def _integral(x):
    if isinstance(x, (bool, int, np.integer)):
        return True
    dtype = getattr(x, "dtype", None)
    return dtype is not None and np.issubdtype(dtype, np.integer) and hasattr(x, "__floordiv__")


def classic_div(a, b):
    """Python 2's `a / b`: floor division when both are integers, true division otherwise."""
    if _integral(a) and _integral(b):
        return a // b
    return a / b


def classic_idiv(a, b):
    """Python 2's `a /= b`, in place for arrays as before (the target is rebound to the result)."""
    if _integral(a) and _integral(b):
        return operator.ifloordiv(a, b)
    return operator.itruediv(a, b)


def old_index(x):
    """A slice bound as NumPy before 1.12 took it: a float is truncated to an int."""
    if isinstance(x, (float, np.floating)):
        return int(x)
    return x


HELPERS = {"__caffe_div__": classic_div, "__caffe_idiv__": classic_idiv,
           "__caffe_index__": old_index}


# ---- translation ----------------------------------------------------------------------------

def _refactoring_tool():
    if _tool:
        return _tool[0]
    refactor = require("fissix.refactor", extra="py2", feature="Python 2 layers")
    from . import python2_fixers
    names = refactor.get_fixers_from_package("fissix.fixes")

    class Tool(refactor.RefactoringTool):
        def get_fixers(self):
            pre, post = super().get_fixers()
            for cls in python2_fixers.FIXERS:
                fixer = cls(self.options, self.fixer_log)
                (pre if fixer.order == "pre" else post).append(fixer)
            key = operator.attrgetter("run_order")
            return sorted(pre, key=key), sorted(post, key=key)

    _tool.append(Tool(names))
    return _tool[0]


def translate(source, filename="<python 2>"):
    """Python 3 source for the Python 2 module `source` (the file is not touched)."""
    if not source.strip():
        return source
    if not source.endswith("\n"):
        source += "\n"
    with _lock:                 # a RefactoringTool is not thread-safe
        tool = _refactoring_tool()
        try:
            return str(tool.refactor_string(source, filename))
        except Exception as e:
            where = f"{filename}:{e.lineno}" if getattr(e, "lineno", None) else filename
            raise Python2Error(f"{where}: cannot translate this Python 2 module: {e}") from None


# ---- the import hook --------------------------------------------------------------------------

def _under(path, root):
    return os.path.abspath(path).startswith(root.rstrip(os.sep) + os.sep)


def is_python2_file(path):
    return any(_under(path, root) for root in _roots)


class Python2Loader(importlib.machinery.SourceFileLoader):
    """Loads a Python 2 source file as its Python 3 translation; never reads or writes .pyc
    (a cached .pyc beside it would hold the untranslated code)."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        source = importlib.util.decode_source(self.get_data(path))
        return compile(translate(source, path), path, "exec", dont_inherit=True)

    def exec_module(self, module):
        module.__dict__.update(HELPERS)
        super().exec_module(module)


class Python2Finder(importlib.abc.MetaPathFinder):
    """Finds modules as the normal path finder does, and translates those under a marked folder."""

    def find_spec(self, fullname, path=None, target=None):
        if not _roots:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return None
        if not is_python2_file(spec.origin):
            return None
        spec.loader = Python2Loader(fullname, spec.origin)
        spec.cached = None
        return spec


_finder = Python2Finder()


def mark_root(root):
    """Translate every module imported from folder `root` from now on."""
    root = os.path.abspath(root)
    with _lock:
        if root not in _roots:
            _roots.append(root)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def unmark_root(root):
    """Stop translating modules imported from `root` (those already imported stay as they are)."""
    root = os.path.abspath(root)
    with _lock:
        if root in _roots:
            _roots.remove(root)
        if not _roots and _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


def root_of(filename, search_path):
    """The folder on `search_path` that holds `filename` (the deepest one, as imports find it)."""
    here = [os.path.abspath(p or os.curdir) for p in search_path]
    owners = [p for p in here if _under(filename, p)]
    return max(owners, key=len) if owners else os.path.dirname(os.path.abspath(filename))


def module_root(module_name, search_path):
    """The folder a module would be imported from, without importing it."""
    top = module_name.split(".")[0]
    spec = importlib.machinery.PathFinder.find_spec(top, search_path)
    if spec is None or not spec.origin:
        return None
    return root_of(spec.origin, search_path)


def import_layer_module(name, search_path, do_import):
    """Import a Python layer's module with `do_import()`, translating it from Python 2 where
    the mode asks for it. Returns the module."""
    mode = _state["mode"]
    if mode is True:
        root = module_root(name, search_path)
        if root:
            mark_root(root)
    if mode is False:
        return do_import()
    first, marked = None, []
    for _ in range(8):          # each retry marks one more folder
        before = set(sys.modules)
        try:
            return do_import()
        except SyntaxError as e:
            if isinstance(e, Python2Error) and first is not None:
                # Neither Python 3 nor Python 2: show the Python 3 compiler's complaint.
                first.add_note(f"it is not Python 2 either: {e}")
                for root in marked:
                    unmark_root(root)
                raise first from None
            if isinstance(e, Python2Error) or not e.filename or is_python2_file(e.filename):
                raise
            first = first or e
            root = root_of(e.filename, search_path)
            log.warning("Python layer module '%s': %s:%s is not Python 3; translating the "
                        "Python 2 modules under %s (caffe.set_python2_layers)",
                        name, e.filename, e.lineno, root)
            # Modules this attempt imported from that folder untranslated are imported again.
            for key in set(sys.modules) - before:
                file = getattr(sys.modules[key], "__file__", None)
                if file and _under(file, root):
                    del sys.modules[key]
            marked.append(os.path.abspath(root))
            mark_root(root)
    return do_import()
