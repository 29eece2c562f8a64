"""The six solvers of Caffe and pycaffe's ways to make them.

caffe.get_solver(path) picks the class by the file's `type`; caffe.SGDSolver(path) and
its siblings build one type whatever the file says, as pycaffe's classes do.
"""
from .base import (LR_POLICIES, SOLVER_REGISTRY, SignalHandler, Solver, SolverError,
                   get_solver, read_solver, register_solver, solver_type_list)
from .sgd import NesterovSolver, SGDSolver
from .adaptive import AdaDeltaSolver, AdaGradSolver, AdamSolver, RMSPropSolver

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "read_solver", "register_solver",
           "solver_type_list", "SignalHandler", "SolverError", "LR_POLICIES", "SOLVER_REGISTRY"]
