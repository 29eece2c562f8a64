"""The six solvers of Caffe and pycaffe's ways to make them.

caffe.get_solver(path) picks the class by the file's `type`; caffe.SGDSolver(path) and
its siblings build one type whatever the file says, as pycaffe's classes do.

    solver.py      the loop: step, test, apply_update (Caffe's Solver and SGDSolver)
    lr_policy.py   the learning rate of an iteration
    snapshot.py    snapshots and resuming (.solverstate[.h5])
    signals.py     SIGINT/SIGHUP as solver actions
    registry.py    solver types by name; the solver file as Caffe reads it
    sgd.py         SGD, Nesterov
    adaptive.py    AdaGrad, RMSProp, AdaDelta, Adam
    dashboard.py   live training plots
"""
from ..errors import SolverError
from .lr_policy import LR_POLICIES
from .registry import SOLVER_REGISTRY, get_solver, read_solver, register_solver, solver_type_list
from .signals import SignalHandler
from .solver import Solver
from .sgd import NesterovSolver, SGDSolver
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, RMSPropSolver

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "read_solver", "register_solver",
           "solver_type_list", "SignalHandler", "SolverError", "LR_POLICIES", "SOLVER_REGISTRY"]
