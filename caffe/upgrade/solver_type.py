"""Solvers with the solver_type enum instead of the type string."""
import logging

from ..errors import UpgradeError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


_SOLVER_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}


def solver_needs_type_upgrade(solver):
    return solver.HasField("solver_type")


def solver_needs_upgrade(solver):
    return solver_needs_type_upgrade(solver)


def upgrade_solver_type(solver):
    """Replace the ``solver_type`` enum with the ``type`` string."""
    if solver.HasField("solver_type") and solver.HasField("type"):
        raise UpgradeError("solver sets both the old solver_type (enum) and the "
                           "new type (string); keep only type")
    if not solver.HasField("solver_type"):
        log.error("Solver type is already up to date")
        return False
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    solver.type = _SOLVER_TYPES[enum_name]
    solver.ClearField("solver_type")
    return True


def upgrade_solver_as_needed(solver, source_name="<solver>"):
    """Bring ``solver`` (a SolverParameter) to the current format in place."""
    success = True
    if solver_needs_type_upgrade(solver):
        log.info("Attempting to upgrade the solver_type enum of %s", source_name)
        if upgrade_solver_type(solver):
            log.info("Upgraded solver_type of %s to the type string", source_name)
            log.warning("solver_type is deprecated; use type (a string) instead")
        else:
            success = False
            log.error("Problems upgrading the solver type of %s (see above)",
                      source_name)
    return success
