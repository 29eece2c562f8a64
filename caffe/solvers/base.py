"""The solver's former single module, kept so that code written against it still imports.

New code imports from caffe.solvers (or solver.py, lr_policy.py, snapshot.py, signals.py,
registry.py, debug_info.py).
"""
from .lr_policy import LR_POLICIES  # noqa: F401
from .registry import (SOLVER_REGISTRY, get_solver, read_solver,  # noqa: F401
                       register_solver, solver_type_list, upgrade_snapshot_prefix)
from .signals import ACTIONS, NONE, SNAPSHOT, STOP, SignalHandler  # noqa: F401
from .solver import Solver, SolverError, load_net_weights  # noqa: F401
from .debug_info import fmt, loss_note, output_values  # noqa: F401
