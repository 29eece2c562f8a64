"""pycaffe: Caffe rebuilt in Python on PyTorch. `import caffe` works as BVLC's pycaffe."""
from . import threads as _threads; _threads.configure()  # noqa: E702,I001  (first: before torch)
from .proto import caffe_pb2
from .common import set_mode_cpu, set_mode_gpu, set_device, set_random_seed
from .errors import CaffeError
from .layer import Layer, layer_type_list, register_layer
from .net import Net
from . import layers as _layers  # noqa: F401  (registers the built-in layer catalog)
from .layers.python_layer import set_python_layers_allowed
from .net_spec import layers, params, NetSpec, to_proto
from .classifier import Classifier
from .detector import Detector
from .solvers import (get_solver, SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                      AdaDeltaSolver, AdamSolver)
from . import io, draw  # noqa: E402  (draw imports pydot only when drawing)
from .runtime import init_log, log, has_nccl, Timer
from .parallel import (NCCL, set_solver_count, set_solver_rank, set_multiprocess,
                       solver_count, solver_rank)

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST

__version__ = "0.1.0"

__all__ = ["Net", "Layer", "TRAIN", "TEST", "CaffeError", "caffe_pb2", "layer_type_list",
           "register_layer", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
           "set_python_layers_allowed", "layers", "params", "NetSpec", "to_proto", "Classifier",
           "Detector", "get_solver", "SGDSolver", "NesterovSolver", "AdaGradSolver",
           "RMSPropSolver", "AdaDeltaSolver", "AdamSolver", "io", "draw", "NCCL",
           "set_solver_count", "set_solver_rank", "set_multiprocess", "solver_count",
           "solver_rank", "init_log", "log", "has_nccl", "Timer"]
