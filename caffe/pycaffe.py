"""BVLC's caffe.pycaffe: the Net and the solvers with pycaffe's interface. (BVLC's module
wraps the C++ classes in that interface; here they are Python and have it already.)"""
from .net import Net  # noqa: F401
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver,  # noqa: F401
                      RMSPropSolver, SGDSolver)
