"""Solver types by name (Caffe's SolverRegistry) and the solver file as Caffe reads it."""
import difflib
import logging
import os

from .. import formats
from ..errors import SolverError
from ..proto import caffe_pb2

log = logging.getLogger("caffe.solver")

SOLVER_REGISTRY: dict = {}


def register_solver(cls):
    """Class decorator: make `cls` creatable by its Caffe type string (SolverParameter.type)."""
    SOLVER_REGISTRY[cls.type] = cls
    return cls


def solver_type_list():
    return sorted(SOLVER_REGISTRY)


def read_solver(path):
    """A solver file as Caffe's ReadSolverParamsFromTextFileOrDie reads it."""
    param = formats.read_solver_param(path)
    upgrade_snapshot_prefix(param, str(path))
    return param


def upgrade_snapshot_prefix(param, solver_path):
    """Caffe's default prefix: the solver file's name; a folder prefix gets that name inside."""
    stem = os.path.splitext(solver_path)[0]
    if not param.HasField("snapshot_prefix"):
        param.snapshot_prefix = stem
        log.info("snapshot_prefix was not specified and is set to %s", stem)
    elif os.path.isdir(param.snapshot_prefix):
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, os.path.basename(stem))
        log.info("snapshot_prefix is a directory and is set to %s", param.snapshot_prefix)


def check_path_fields(param):
    """A NUL cannot be in a file name: os calls would raise a bare "embedded null byte"."""
    for field in ("net", "train_net", "test_net", "snapshot_prefix", "weights"):
        values = getattr(param, field)
        for value in (values if isinstance(values, str) else list(values)):
            if "\0" in value:
                raise SolverError(f"{field} {value!r} contains a NUL character, which no "
                                  f"file name can hold")


def get_solver(param, **kwargs):
    """The solver named by the definition's `type` (Caffe's SolverRegistry::CreateSolver)."""
    if not isinstance(param, caffe_pb2.SolverParameter):
        param = read_solver(param)
    cls = SOLVER_REGISTRY.get(param.type)
    if cls is None:
        close = difflib.get_close_matches(param.type, SOLVER_REGISTRY, n=1, cutoff=0.5)
        close += [t for t in SOLVER_REGISTRY if t.lower() == param.type.lower() and t not in close]
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise SolverError(f"unknown solver type '{param.type}' (known types: "
                          f"{', '.join(solver_type_list())}){hint}")
    return cls(param, **kwargs)
