"""pycaffe: Caffe rebuilt in Python on PyTorch. `import caffe` works as BVLC's pycaffe.

The public names below load on first use (PEP 562): ``import caffe`` itself is nearly free,
``caffe.Net`` brings in torch and the layer catalog, ``caffe.io`` numpy and Pillow, HDF5 support
h5py when an HDF5 file is first read. ``import caffe.proto.caffe_pb2`` needs protobuf only.
To add a public name, add it to ``_EXPORTS`` (name -> the submodule defining it).
"""
import importlib
from typing import TYPE_CHECKING

from . import threads as _threads; _threads.configure()  # noqa: E702,I001  (before torch starts its pools)
from ._version import __version__

# public name -> (submodule, attribute in it; None: the submodule itself)
_EXPORTS = {
    "caffe_pb2": (".proto.caffe_pb2", None),
    "TRAIN": (".proto.caffe_pb2", "TRAIN"),
    "TEST": (".proto.caffe_pb2", "TEST"),
    "CaffeError": (".errors", "CaffeError"),
    "set_mode_cpu": (".common", "set_mode_cpu"),
    "set_mode_gpu": (".common", "set_mode_gpu"),
    "set_device": (".common", "set_device"),
    "set_random_seed": (".common", "set_random_seed"),
    "Layer": (".layer", "Layer"),
    "layer_type_list": (".layers", "layer_type_list"),
    "register_layer": (".layers", "register_layer"),
    "Net": (".net", "Net"),
    "set_python_layers_allowed": (".layers.python_layer", "set_python_layers_allowed"),
    "set_python2_layers": (".layers.python2", "set_python2_layers"),
    "layers": (".layers", None),
    "params": (".net_spec", "params"),
    "NetSpec": (".net_spec", "NetSpec"),
    "to_proto": (".net_spec", "to_proto"),
    "Classifier": (".classifier", "Classifier"),
    "Detector": (".detector", "Detector"),
    "get_solver": (".solvers", "get_solver"),
    "SGDSolver": (".solvers", "SGDSolver"),
    "NesterovSolver": (".solvers", "NesterovSolver"),
    "AdaGradSolver": (".solvers", "AdaGradSolver"),
    "RMSPropSolver": (".solvers", "RMSPropSolver"),
    "AdaDeltaSolver": (".solvers", "AdaDeltaSolver"),
    "AdamSolver": (".solvers", "AdamSolver"),
    "io": (".io", None),
    "draw": (".draw", None),
    # Submodules BVLC's __init__ imports: caffe-tensorflow and MMdnn read caffe.proto.caffe_pb2
    # right after `import caffe`.
    "proto": (".proto", None),
    "pycaffe": (".pycaffe", None),
    "classifier": (".classifier", None),
    "detector": (".detector", None),
    "net_spec": (".net_spec", None),
    "NCCL": (".parallel", "NCCL"),
    "set_solver_count": (".parallel", "set_solver_count"),
    "set_solver_rank": (".parallel", "set_solver_rank"),
    "set_multiprocess": (".parallel", "set_multiprocess"),
    "solver_count": (".parallel", "solver_count"),
    "solver_rank": (".parallel", "solver_rank"),
    "init_log": (".runtime", "init_log"),
    "log": (".runtime", "log"),
    "has_nccl": (".runtime", "has_nccl"),
    "Timer": (".runtime", "Timer"),
}

if TYPE_CHECKING:     # what type checkers and editors see: the same names, imported eagerly
    from . import (classifier as classifier, detector as detector, draw as draw, io as io,
                   net_spec as net_spec, proto as proto, pycaffe as pycaffe)
    from .classifier import Classifier as Classifier
    from .common import (set_device as set_device, set_mode_cpu as set_mode_cpu,
                         set_mode_gpu as set_mode_gpu, set_random_seed as set_random_seed)
    from .detector import Detector as Detector
    from .errors import CaffeError as CaffeError
    from .layer import Layer as Layer
    from .layers import layer_type_list as layer_type_list, register_layer as register_layer
    from .layers.python_layer import set_python_layers_allowed as set_python_layers_allowed
    from .layers.python2 import set_python2_layers as set_python2_layers
    from .net import Net as Net
    from . import layers as layers
    from .net_spec import NetSpec as NetSpec, params as params
    from .net_spec import to_proto as to_proto
    from .parallel import (NCCL as NCCL, set_multiprocess as set_multiprocess,
                           set_solver_count as set_solver_count,
                           set_solver_rank as set_solver_rank, solver_count as solver_count,
                           solver_rank as solver_rank)
    from .proto import caffe_pb2 as caffe_pb2
    from .runtime import (Timer as Timer, has_nccl as has_nccl, init_log as init_log,
                          log as log)
    from .proto.caffe_pb2 import TEST as TEST, TRAIN as TRAIN
    from .solvers import (AdaDeltaSolver as AdaDeltaSolver, AdaGradSolver as AdaGradSolver,
                          AdamSolver as AdamSolver, NesterovSolver as NesterovSolver,
                          RMSPropSolver as RMSPropSolver, SGDSolver as SGDSolver,
                          get_solver as get_solver)

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    try:
        module_name, attribute = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module 'caffe' has no attribute '{name}'") from None
    module = importlib.import_module(module_name, __name__)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value     # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
