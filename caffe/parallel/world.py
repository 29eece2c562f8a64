"""Where this process stands among the workers (BVLC's Caffe::solver_count / solver_rank),
which part of the data it reads, and the settings that come from the environment."""
import datetime
import os

from ..errors import CaffeError
from ..proto import caffe_pb2

DEFAULT_TIMEOUT_S = 1800.0     # torch's own default for gloo and NCCL
DEFAULT_BUCKET_MB = 4.0
PATIENT_TIMEOUT = datetime.timedelta(days=7)
LAUNCH_GRACE_S = 30.0          # how long the launcher lets survivors fail by themselves
DEFAULT_RDZV_TIMEOUT_S = 300.0  # how long workers wait for each other to turn up
DEFAULT_HEARTBEAT_S = 60.0     # how long a worker may go unheard before the others stop

_state = {"count": 1, "rank": 0, "multiprocess": False, "worker": None}


class WorkerError(CaffeError):
    """Another worker died, hung or runs a different net: this one cannot go on."""


# -- the process-wide place among the workers (Caffe::solver_count / solver_rank) ----------
def solver_count():
    return _state["count"]


def solver_rank():
    return _state["rank"]


def set_solver_count(count):
    count = int(count)
    if count < 1:
        raise CaffeError(f"set_solver_count: need at least 1 solver, got {count}")
    _state["count"] = count


def set_solver_rank(rank):
    rank = int(rank)
    if rank < 0:
        raise CaffeError(f"set_solver_rank: rank must be >= 0, got {rank}")
    _state["rank"] = rank


def set_multiprocess(flag):
    """pycaffe's flag for one process per solver; every worker here is its own process."""
    _state["multiprocess"] = bool(flag)


def multiprocess():
    return _state["multiprocess"]


def is_root():
    """Whether this process is the root solver (worker 0): the one that tests, logs, snapshots."""
    return _state["rank"] == 0


def data_shard(phase):
    """(rank, count): a data layer of `phase` keeps item i of its source when i % count == rank.

    Only the root solver runs test nets, so they read all of their data."""
    if phase == caffe_pb2.TEST:
        return 0, 1
    return _state["rank"], _state["count"]


def current_worker():
    return _state["worker"]


# -- settings from the environment ----------------------------------------------------------
def _env_float(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise CaffeError(f"{name}={value!r} is not a number") from None


def _positive_seconds(name, default):
    seconds = _env_float(name, default)
    if seconds <= 0:
        raise CaffeError(f"{name} must be positive, got {seconds:g}")
    return datetime.timedelta(seconds=seconds)


def timeout():
    """How long a collective may wait for the others (CAFFE_DIST_TIMEOUT seconds)."""
    return _positive_seconds("CAFFE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)


def rendezvous_timeout():
    """How long joining waits for every worker to turn up (CAFFE_RDZV_TIMEOUT seconds)."""
    return _positive_seconds("CAFFE_RDZV_TIMEOUT", DEFAULT_RDZV_TIMEOUT_S)


def heartbeat_timeout():
    """How long a worker may go unheard (stopped, hung, cut off) before the others stop
    (CAFFE_DIST_HEARTBEAT seconds)."""
    return _positive_seconds("CAFFE_DIST_HEARTBEAT", DEFAULT_HEARTBEAT_S)


def env_world():
    """(rank, world size, local rank) from torchrun-style variables; None for a lone process."""
    if "WORLD_SIZE" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CaffeError("WORLD_SIZE, RANK and LOCAL_RANK must be integers, got "
                         f"{os.environ.get('WORLD_SIZE')!r}, {os.environ.get('RANK')!r}, "
                         f"{os.environ.get('LOCAL_RANK')!r}") from None
    if world <= 1:
        return None
    if not 0 <= rank < world:
        raise CaffeError(f"RANK {rank} is outside 0..{world - 1} (WORLD_SIZE {world})")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(v)]
    if missing:
        raise CaffeError(f"WORLD_SIZE is {world} but {' and '.join(missing)} "
                         f"{'is' if len(missing) == 1 else 'are'} not set: the workers cannot "
                         f"find each other")
    return rank, world, local
