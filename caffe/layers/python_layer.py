"""The Python layer: a layer written by the user in Python on NumPy arrays, as in pycaffe.

    layer { type: "Python" python_param { module: "my_layers" layer: "MyLayer"
                                          param_str: "anything" } }

imports `my_layers` and instantiates `MyLayer(param)`, a subclass of caffe.Layer that
implements setup(bottom, top), reshape(bottom, top), forward(bottom, top) and
backward(top, propagate_down, bottom). Its bottoms and tops are blobs whose .data and
.diff are NumPy arrays; self.param_str, self.phase and self.blobs (learned blobs, grown
with self.blobs.add_blob(*shape) and saved with the net's weights) are set as pycaffe does.
"""
import contextlib
import importlib
import os
import sys
import threading

import torch

from ..blob import Blob, PyBlob
from ..errors import LayerSetupError
from ..layer import Layer, register_layer
from ..proto import caffe_pb2
from . import python2

_allowed = [True]
_search = threading.local()


def set_python_layers_allowed(allowed):
    """Allow or refuse Python layers; refuse them before loading a model you do not trust,
    since a Python layer runs arbitrary code from the module it names."""
    # bool("false") is True: a string (a flag's text) must not switch the guard on silently.
    is_bool = isinstance(allowed, bool) or getattr(allowed, "dtype", None) == bool or (
        isinstance(allowed, int) and allowed in (0, 1))          # numpy.bool_, 0 and 1 too
    if not is_bool:
        raise TypeError(f"set_python_layers_allowed() takes True or False, not "
                        f"{type(allowed).__name__} {allowed!r}")
    _allowed[0] = bool(allowed)


def python_layers_allowed():
    return _allowed[0]


@contextlib.contextmanager
def module_search_dir(path):
    """Also look for Python-layer modules in `path` (the folder of the prototxt being
    loaded) while the block runs."""
    stack = _search.__dict__.setdefault("dirs", [])
    stack.append(os.path.abspath(path))
    try:
        yield
    finally:
        stack.pop()


def _search_path():
    extra = list(reversed(getattr(_search, "dirs", []))) + [os.getcwd()]
    return list(sys.path) + [d for d in extra if d not in sys.path]


def _import_module(name, layer_name):
    # Extra folders go after sys.path so they never shadow an installed module.
    path = _search_path()
    added = [d for d in path if d not in sys.path]
    sys.path.extend(added)
    try:
        if name not in sys.modules:
            importlib.invalidate_caches()     # a module written since the last import
        # A module written for Python 2 (py-faster-rcnn's lib/) is translated as it is imported.
        return python2.import_layer_module(name, path, lambda: importlib.import_module(name))
    except ModuleNotFoundError as e:
        if e.name is not None and e.name != name and not name.startswith(e.name + "."):
            raise                   # the module exists; something it imports does not
        shown = "\n  ".join(p or "(current directory)" for p in path)
        raise LayerSetupError(
            f"layer '{layer_name}' (Python): cannot import module '{name}'. Put it on "
            f"PYTHONPATH, in the current directory or beside the prototxt. Searched:\n  {shown}"
        ) from None
    finally:
        for d in added:
            sys.path.remove(d)


class PhaseValue(int):
    """A phase as pycaffe's Boost.Python enum shows it: equal to caffe.TRAIN / caffe.TEST,
    and str() gives 'TRAIN' / 'TEST' (py-faster-rcnn indexes its config by str(self.phase))."""

    def __str__(self):
        return caffe_pb2.Phase.Name(int(self))

    __repr__ = __str__


class BlobVec:
    """pycaffe's `self.blobs` for a Python layer: NumPy-faced views of the learned blobs."""

    def __init__(self, owner):
        self._owner = owner

    def __len__(self):
        return len(self._owner.blobs)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [PyBlob(b) for b in self._owner.blobs[index]]
        return PyBlob(self._owner.blobs[index])

    def __iter__(self):
        return (PyBlob(b) for b in self._owner.blobs)

    def add_blob(self, *shape):
        """Append a zero-filled learned blob of the given shape."""
        owner = self._owner
        owner.blobs.append(Blob(shape, owner.dtype, owner.device))

    def __repr__(self):
        return f"[{', '.join(repr(b) for b in self)}]"


@register_layer
class PythonLayer(Layer):
    """Runs the user's caffe.Layer subclass on NumPy views of this layer's blobs."""

    type = "Python"

    def __init__(self, param, dtype=torch.float32, device="cpu"):
        super().__init__(param, dtype, device)
        p = param.python_param
        what = f"layer '{param.name}' (Python)"
        if not _allowed[0]:
            raise LayerSetupError(
                f"{what}: Python layers are disabled (caffe.set_python_layers_allowed(False)); "
                f"this model would run code from module '{p.module}'")
        if not p.module or not p.layer:
            raise LayerSetupError(f"{what}: python_param needs both module and layer")
        module = _import_module(p.module, param.name)
        cls = getattr(module, p.layer, None)
        if cls is None:
            raise LayerSetupError(f"{what}: module '{p.module}' "
                                  f"({getattr(module, '__file__', '?')}) has no '{p.layer}'")
        if not (isinstance(cls, type) and issubclass(cls, Layer)):
            raise LayerSetupError(f"{what}: {p.module}.{p.layer} must be a subclass of "
                                  f"caffe.Layer")
        self.where = f"Python layer '{param.name}' ({p.module}.{p.layer})"
        impl = self._call("__init__", cls, param)
        # pycaffe's attributes: the user sees NumPy views and this layer's learned blobs.
        # param_str_ is the name older pycaffe forks (caffe-fast-rcnn) give it.
        impl.param_str = impl.param_str_ = p.param_str
        impl.phase, impl.type = PhaseValue(self.phase), self.type
        impl.dtype, impl.device = self.dtype, self.device
        impl.blobs = BlobVec(self)
        self.impl = impl

    def _call(self, method, fn, *args):
        try:
            return fn(*args)
        except Exception as e:
            e.add_note(f"raised in {method}() of {self.where}")
            raise

    def allow_force_backward(self, bottom_index):
        return self.impl.allow_force_backward(bottom_index)

    @staticmethod
    def _np(blobs):
        return [PyBlob(b) for b in blobs]

    def setup(self, bottom, top):
        self._call("setup", self.impl.setup, self._np(bottom), self._np(top))

    def reshape(self, bottom, top):
        self._call("reshape", self.impl.reshape, self._np(bottom), self._np(top))

    def forward(self, bottom, top):
        self._call("forward", self.impl.forward, self._np(bottom), self._np(top))

    def backward(self, top, propagate_down, bottom):
        self._call("backward", self.impl.backward, self._np(top), list(propagate_down),
                   self._np(bottom))
