"""BVLC's own python/caffe package from the reference tarball, importable beside ours.

BVLC 1.0 master's python/caffe/{io,classifier,detector,net_spec,coord_map,draw}.py are
extracted from ../shared/reference and imported unchanged, as the package `caffe`, with
stand-ins for what its C++ build provided: `caffe._caffe` (its Net wraps this project's
Net, so both sides run one engine and differ only in the Python around it) and
`caffe.proto.caffe_pb2` (ours). Our package is set aside in sys.modules while theirs
imports and put back after, so each side's modules keep their own `caffe`.

Where BVLC's code no longer runs in today's environment, a stand-in gives it what its
environment of the time gave (never an edit of its files):
  * scikit-image >= 0.19 refuses load_image's `as_grey=` (renamed `as_gray` in 0.14): its
    `skimage` global is a stand-in whose imread takes the old spelling;
  * NumPy 2 removed ndarray.tostring and the binary mode of np.fromstring, used by
    array_to_datum and datum_to_array: their `np` global is a stand-in with NumPy 1's
    fromstring, and arrays given to array_to_datum have tostring (WithToString);
  * NumPy >= 1.12 refuses float slice bounds, which Detector.crop with context_pad uses:
    the image it crops truncates float bounds as NumPy 1.11 did (FloatSlices).
"""
import importlib
import re
import sys
import tarfile
import types
import warnings

import numpy as np

from caffe import net as our_net
from caffe.proto import caffe_pb2
from tests.conftest import shared_path

TARBALL = ("reference", "bvlc-caffe-9b89154.tar.gz")
MODULES = ("io", "classifier", "detector", "net_spec", "coord_map", "draw")


class StandInNet:
    """BVLC's boost-python caffe._caffe.Net, over this project's Net: the raw members that
    BVLC's pycaffe.py builds its Net interface from."""

    def __init__(self, model_file, phase, weights=None):
        self._ours = our_net.Net(model_file, phase, weights=weights)
        self._blob_names = list(self._ours._blob_names)
        self._blobs = list(self._ours.blobs.values())
        self._layer_names = list(self._ours._layer_names)
        self.layers = self._ours.layers
        self._inputs = list(self._ours._inputs)
        self._outputs = list(self._ours._outputs)

    def _forward(self, start, end):
        return self._ours._forward(start, end)

    def _backward(self, start, end):
        return self._ours._backward(start, end)

    def _top_ids(self, i):
        return self._ours._top_ids(i)

    def _bottom_ids(self, i):
        return self._ours._bottom_ids(i)


def _stand_in_caffe():
    module = types.ModuleType("caffe._caffe")
    module.Net = StandInNet
    for name in ("SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
                 "AdaDeltaSolver", "AdamSolver", "NCCL", "Timer", "Layer"):
        setattr(module, name, type(name, (), {}))
    for name in ("init_log", "log", "set_mode_cpu", "set_mode_gpu", "set_device",
                 "layer_type_list", "set_random_seed", "solver_count", "set_solver_count",
                 "solver_rank", "set_solver_rank", "set_multiprocess", "has_nccl",
                 "get_solver"):
        setattr(module, name, lambda *args, **kwargs: None)
    module.__version__ = "1.0.0"
    return module


def _stand_in_skimage():
    """scikit-image as BVLC's io.py called it: imread(filename, as_grey=...)."""
    import skimage
    import skimage.io

    def imread(fname, as_grey=False):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return skimage.io.imread(fname, as_gray=as_grey)

    return types.SimpleNamespace(io=types.SimpleNamespace(imread=imread),
                                 img_as_float=skimage.img_as_float)


def _stand_in_numpy():
    """NumPy with NumPy 1's binary-mode fromstring."""
    module = types.ModuleType("numpy_1_fromstring")
    module.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    module.fromstring = lambda string, dtype=float: np.frombuffer(string, dtype).copy()
    return module


class WithToString(np.ndarray):
    """An array with NumPy 1's tostring (NumPy 2 removed it)."""

    def tostring(self):
        return self.tobytes()


class FloatSlices(np.ndarray):
    """An image whose float slice bounds truncate, as NumPy <= 1.11 did."""

    def __getitem__(self, index):
        def fix(s):
            if isinstance(s, slice):
                return slice(*(None if v is None else int(v) for v in (s.start, s.stop, s.step)))
            return s
        index = tuple(fix(i) for i in index) if isinstance(index, tuple) else fix(index)
        return np.asarray(super().__getitem__(index))


def _is_caffe(name):
    return name == "caffe" or name.startswith("caffe.")


def load_bvlc_pycaffe(dest):
    """BVLC's modules, extracted into the folder `dest`, by name: .io, .classifier, ...
    (and .caffe, its package)."""
    with tarfile.open(shared_path(*TARBALL)) as tar:
        members = [m for m in tar.getmembers()
                   if re.fullmatch(r"[^/]+/python/caffe/[^/]+\.py", m.name)]
        tar.extractall(dest, members=members, filter="data")
    (root,) = [p for p in dest.iterdir() if p.is_dir()]
    python = str(root / "python")
    ours = {k: v for k, v in sys.modules.items() if _is_caffe(k)}
    proto = types.ModuleType("caffe.proto")
    proto.__path__ = []
    proto.caffe_pb2 = caffe_pb2
    for k in ours:
        del sys.modules[k]
    sys.modules.update({"caffe._caffe": _stand_in_caffe(), "caffe.proto": proto,
                        "caffe.proto.caffe_pb2": caffe_pb2})
    sys.path.insert(0, python)
    try:
        modules = {"caffe": importlib.import_module("caffe")}
        modules.update((name, importlib.import_module("caffe." + name)) for name in MODULES)
    finally:
        sys.path.remove(python)
        for k in [k for k in sys.modules if _is_caffe(k)]:
            del sys.modules[k]
        sys.modules.update(ours)
    for name, module in modules.items():
        assert module.__file__.startswith(str(root)), (name, module.__file__)
    modules["io"].skimage = _stand_in_skimage()
    modules["io"].np = _stand_in_numpy()
    return types.SimpleNamespace(**modules)
