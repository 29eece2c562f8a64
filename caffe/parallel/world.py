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

world_state = {"count": 1, "rank": 0, "multiprocess": False, "worker": None}


class WorkerError(CaffeError):
    """Another worker died, hung or runs a different net: this one cannot go on."""


# -- the process-wide place among the workers (Caffe::solver_count / solver_rank) ----------
def solver_count():
    return world_state["count"]


def solver_rank():
    return world_state["rank"]


def set_solver_count(count):
    count = int(count)
    if count < 1:
        raise CaffeError(f"set_solver_count: need at least 1 solver, got {count}")
    world_state["count"] = count


def set_solver_rank(rank):
    rank = int(rank)
    if rank < 0:
        raise CaffeError(f"set_solver_rank: rank must be >= 0, got {rank}")
    world_state["rank"] = rank


def set_multiprocess(flag):
    """pycaffe's flag for one process per solver; every worker here is its own process."""
    world_state["multiprocess"] = bool(flag)


def multiprocess():
    return world_state["multiprocess"]


def is_root():
    """Whether this process is the root solver (worker 0): the one that tests, logs, snapshots."""
    return world_state["rank"] == 0


def data_shard(phase):
    """(rank, count): a data layer of `phase` keeps item i of its source when i % count == rank.

    Only the root solver runs test nets, so they read all of their data."""
    if phase == caffe_pb2.TEST:
        return 0, 1
    return world_state["rank"], world_state["count"]


def current_worker():
    return world_state["worker"]


# -- settings from the environment ----------------------------------------------------------
def env_float(name, default):
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise CaffeError(f"{name}={value!r} is not a number") from None


def _positive_seconds(name, default):
    seconds = env_float(name, default)
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


def first_host(nodelist):
    """The first host of a Slurm node list: "gpu[03-08,11],cpu1" -> "gpu03"."""
    head, depth = "", 0
    for ch in nodelist.strip():
        if ch == "," and depth == 0:
            break
        depth += (ch == "[") - (ch == "]")
        head += ch
    if "[" not in head:
        return head
    prefix, rest = head.split("[", 1)
    inside, suffix = rest.split("]", 1)
    return prefix + inside.split(",")[0].split("-")[0] + suffix


def slurm_to_env():
    """Under `srun`, torchrun's variables from Slurm's (unless set already, or CAFFE_SLURM=0):
    RANK = SLURM_PROCID, WORLD_SIZE = SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), LOCAL_RANK =
    SLURM_LOCALID, MASTER_ADDR = the first host of SLURM_STEP_NODELIST (or SLURM_JOB_NODELIST,
    SLURM_NODELIST), MASTER_PORT = 29500 + SLURM_JOB_ID % 20000 unless set."""
    env = os.environ
    tasks = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if "WORLD_SIZE" in env or env.get("CAFFE_SLURM") == "0" or "SLURM_PROCID" not in env or \
            not tasks:
        return False
    nodes = (env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or
             env.get("SLURM_NODELIST") or "")
    try:
        if int(tasks.split("(")[0]) <= 1:
            return False
        port = 29500 + int(env.get("SLURM_JOB_ID", "0")) % 20000
    except ValueError:
        raise CaffeError(f"SLURM_NTASKS={tasks!r} / SLURM_JOB_ID="
                         f"{env.get('SLURM_JOB_ID')!r} are not numbers") from None
    if not nodes and "MASTER_ADDR" not in env:
        raise CaffeError("srun gave SLURM_PROCID but no SLURM_NODELIST: set MASTER_ADDR to the "
                         "host of task 0")
    env["WORLD_SIZE"] = tasks.split("(")[0]
    env["RANK"] = env["SLURM_PROCID"]
    env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
    env.setdefault("MASTER_ADDR", first_host(nodes))
    env.setdefault("MASTER_PORT", str(port))
    return True


def env_world():
    """(rank, world size, local rank) from torchrun-style variables (or Slurm's, see
    slurm_to_env); None for a lone process."""
    slurm_to_env()
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
