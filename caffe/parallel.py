"""Synchronous data-parallel training on torch.distributed, as BVLC's multi-GPU Caffe does it.

Every worker (one process per device) holds the whole solver and trains on its own part of the
data. After backward the learned blobs' gradients are summed over the workers and divided by
their number (BVLC's P2PSync and NCCL classes do the same), before clipping, weight decay and the
update, so N workers with batch B step as one worker with batch N x B. With the solver's
`layer_wise_reduce` (BVLC's default) a bucket of gradients is all-reduced as soon as backward
has passed every layer that owns one of them, overlapping communication with the rest of
backward. Worker 0 is BVLC's root solver: it alone builds and runs the test nets, logs and writes
snapshots; its learned blobs, solver history and iteration are broadcast to the others first.

    caffe train -solver s.prototxt -gpu 0,1,2,3      one worker per GPU, over NCCL
    caffe train -solver s.prototxt -gpu all
    caffe train -solver s.prototxt -workers 4         four CPU workers, over gloo
    torchrun --nnodes 2 --nproc-per-node 4 -m caffe.tools.caffe train -solver s.prototxt -gpu all

Under torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) the caffe
command is one worker; -gpu then lists one machine's devices, LOCAL_RANK picking among them.
pycaffe's multi-GPU API (BVLC's python/train.py) works too: set_solver_count, set_solver_rank,
NCCL(solver, uid), nccl.bcast(), solver.add_callback(nccl), solver.net.after_backward(nccl).

Data layers consult data_shard(): worker r of N keeps records r, r + N, r + 2N, ... of a
database (BVLC's DataLayer::Skip); ImageData and HDF5Data stride through their list and rows the
same way. Test-phase data layers read everything, as only worker 0 tests.

A worker that dies makes the others fail at their next exchange with a WorkerError naming it
(when it ran on the same machine); a worker that hangs makes them fail after CAFFE_DIST_TIMEOUT
seconds (default 1800). Worker 0's testing is waited for without that limit.
"""
import atexit
import contextlib
import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import torch
import torch.distributed as dist

from .errors import CaffeError
from .proto import caffe_pb2

log = logging.getLogger("caffe.parallel")

DEFAULT_TIMEOUT_S = 1800.0     # torch's own default for gloo and NCCL
DEFAULT_BUCKET_MB = 4.0
PATIENT_TIMEOUT = datetime.timedelta(days=7)
LAUNCH_GRACE_S = 30.0          # how long the launcher lets survivors fail by themselves

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


def timeout():
    """How long a collective may wait for the others (CAFFE_DIST_TIMEOUT seconds)."""
    seconds = _env_float("CAFFE_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
    if seconds <= 0:
        raise CaffeError(f"CAFFE_DIST_TIMEOUT must be positive, got {seconds}")
    return datetime.timedelta(seconds=seconds)


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


# -- liveness of the other workers ------------------------------------------------------------
def _process_gone(pid):
    """True when process `pid` of this machine has exited (zombies included)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rindex(b")") + 2:][:1] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        pass
    return False


class Worker:
    """This process's membership of the workers: process groups, device and the others' pids.

    Three groups: `group` carries gradients and weights (NCCL on GPUs, gloo on the CPU),
    `control` small CPU messages (loss, stop/snapshot requests; gloo), `patient` the waits for
    worker 0's root-only work (testing), which may take longer than the timeout.
    """

    def __init__(self, rank, world, device="cpu", backend=None, init_method="env://",
                 timeout_=None):
        self.rank, self.world = int(rank), int(world)
        self.device = torch.device(device)
        self.backend = backend or ("nccl" if self.device.type == "cuda" else "gloo")
        self.timeout = timeout_ or timeout()
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        set_solver_count(self.world)
        set_solver_rank(self.rank)
        if not dist.is_initialized():
            try:
                dist.init_process_group(self.backend, init_method=init_method, rank=self.rank,
                                        world_size=self.world, timeout=self.timeout)
            except (RuntimeError, ValueError) as e:
                raise WorkerError(f"worker {self.rank}: could not join the {self.world} "
                                  f"workers over {self.backend} ({init_method}): "
                                  f"{_first_line(e)}") from None
        self.group = dist.group.WORLD
        self.control = (self.group if self.backend == "gloo" else
                        dist.new_group(backend="gloo", timeout=self.timeout))
        self.patient = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        peers = [None] * self.world
        seed = int(torch.randint(2 ** 62, ()))
        with self.guard("start-up"):
            dist.all_gather_object(peers, (socket.gethostname(), os.getpid(), seed),
                                   group=self.patient)
        self.peers = [(host, pid) for host, pid, _ in peers]
        # One seed for all until the nets are built, so that unseeded solvers still shuffle
        # their lists alike and the workers' strides through them partition the data.
        self.seed = peers[0][2]
        from . import common
        common.set_random_seed(self.seed)
        _state["worker"] = self
        atexit.register(self._at_exit)

    # -- failures ------------------------------------------------------------------------------
    def dead_peers(self, wait_s=2.0):
        """Descriptions of the other workers of this machine that are no longer running."""
        host = socket.gethostname()
        deadline = time.monotonic() + wait_s
        while True:
            dead = [f"worker {r} (pid {pid}) is no longer running"
                    for r, (h, pid) in enumerate(self.peers)
                    if r != self.rank and h == host and _process_gone(pid)]
            # A killed process closes its sockets a moment before the kernel marks it exited.
            if dead or time.monotonic() >= deadline:
                return dead
            time.sleep(0.1)

    @contextlib.contextmanager
    def guard(self, what):
        """Turn a failed or timed-out collective into a WorkerError that says what happened."""
        try:
            yield
        except WorkerError:
            raise
        except RuntimeError as e:
            detail = _first_line(e)
            if "timed out" in detail.lower() or "timeout" in detail.lower():
                cause = (f"no answer within {self.timeout.total_seconds():g} s "
                         f"(CAFFE_DIST_TIMEOUT): a worker hangs or is much slower")
            else:
                dead = self.dead_peers() if getattr(self, "peers", None) else []
                remote = any(h != socket.gethostname() for h, _ in getattr(self, "peers", ()))
                cause = "; ".join(dead) if dead else (
                    "a worker on another machine crashed, or the network failed" if remote
                    else "another worker crashed or closed its connection")
            raise WorkerError(f"worker {self.rank}: lost contact with the other workers during "
                              f"{what}: {cause}. Stopping. ({detail})") from None

    def _at_exit(self):
        # pycaffe scripts just end: a process group left alive aborts at teardown now and
        # then. No barrier here: after an error the others may wait in another collective.
        if _state["worker"] is self:
            _state["worker"] = None
            if dist.is_initialized():
                dist.destroy_process_group()
            self._drop_groups()

    def _drop_groups(self):
        # A group object that outlives destroy_process_group dies in interpreter teardown,
        # where its threads abort the process.
        self.group = self.control = self.patient = None

    def close(self):
        """Leave the process group once every worker is done (the end of training)."""
        if _state["worker"] is self:
            _state["worker"] = None
        if dist.is_initialized():
            # Worker 0 serves the rendezvous store: tearing down in step avoids aborts
            # ("terminate called without an active exception") in the others.
            with self.guard("the final barrier"):
                dist.barrier(group=self.patient)
            dist.destroy_process_group()
        self._drop_groups()


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def init_worker(rank=None, world=None, device="cpu", backend=None, init_method="env://"):
    """Join the process group as worker `rank` of `world` (default: torchrun's variables)."""
    if _state["worker"] is not None:
        return _state["worker"]
    if rank is None or world is None:
        env = env_world()
        if env is None:
            raise CaffeError("init_worker: no rank and world size given and WORLD_SIZE is not "
                             "set above 1")
        rank, world = env[0], env[1]
    return Worker(rank, world, device, backend, init_method)


# -- gradients in buckets ---------------------------------------------------------------------
class _Bucket:
    """Learned blobs whose gradients travel together, launched after backward of `layer`."""

    def __init__(self, layer, blobs):
        self.layer, self.blobs = layer, blobs
        self.buffer = self.flat = self.views = self.work = None

    def launch(self, group):
        diffs = [b.diff for b in self.blobs]
        if len(diffs) == 1 and diffs[0].is_contiguous():
            self.flat, self.views = diffs[0], None       # in place: no copies
        else:
            n = sum(d.numel() for d in diffs)
            ref = diffs[0]
            if self.buffer is None or self.buffer.numel() != n or \
                    self.buffer.dtype != ref.dtype or self.buffer.device != ref.device:
                self.buffer = torch.empty(n, dtype=ref.dtype, device=ref.device)
            torch.cat([d.reshape(-1) for d in diffs], out=self.buffer)
            self.flat, self.views = self.buffer, diffs
        self.work = dist.all_reduce(self.flat, group=group, async_op=True)

    def finish(self, scale):
        self.work.wait()
        self.work = None
        # BVLC sums and then scales: loss layers already divide by the per-worker batch.
        self.flat.mul_(scale)
        if self.views is not None:
            offset = 0
            for d in self.views:
                d.copy_(self.flat[offset:offset + d.numel()].view_as(d))
                offset += d.numel()
        self.flat = self.views = None


def _itemsize(dtype):
    return torch.empty((), dtype=dtype).element_size()


def plan_buckets(net, cap_bytes):
    """Group the net's learnable blobs into buckets of about cap_bytes, in backward order.

    A blob's gradient is final once backward has passed the first layer (in net order) that
    uses it: for a shared parameter that is its owner, after every other user has added its
    part. A bucket is launched after the layer that completes its last member.
    """
    params = net.learnable_params
    ready = [len(net._layers)] * len(params)
    for pid, (layer_id, _) in enumerate(net.param_layer_indices):
        lid = net.learnable_param_ids[pid]
        ready[lid] = min(ready[lid], layer_id)
    by_layer = {}
    for lid, layer_id in enumerate(ready):
        by_layer.setdefault(layer_id, []).append(lid)
    buckets, current, size = [], [], 0
    for layer_id in sorted(by_layer, reverse=True):
        for lid in by_layer[layer_id]:
            current.append(params[lid])
            size += params[lid].count() * _itemsize(params[lid].dtype)
        if size >= cap_bytes:
            buckets.append(_Bucket(layer_id, current))
            current, size = [], 0
    if current:
        buckets.append(_Bucket(min(by_layer), current))
    return buckets


class DataParallel:
    """Keep one solver in step with its copies on the other workers.

    DataParallel(solver) registers itself as the solver's callback (on_start,
    on_gradients_ready) and, with layer_wise_reduce, as the train net's after_backward hook;
    the solver asks it (solver.data_parallel) for the mean loss and for agreement on stop and
    snapshot requests. Call broadcast() once before training (after any restore).
    """

    def __init__(self, solver, register=True, layer_wise=None, bucket_mb=None):
        worker = _state["worker"]
        if worker is None:
            raise CaffeError("data-parallel training needs the workers' process group first: "
                             "run under `caffe train -workers N` / `-gpu 0,1`, torchrun, or call "
                             "caffe.parallel.init_worker()")
        self.worker, self.solver, self.net = worker, solver, solver.net
        self.count, self.rank = worker.world, worker.rank
        self.scale = 1.0 / self.count
        self.layer_wise = (solver.param.layer_wise_reduce if layer_wise is None
                           else bool(layer_wise))
        cap_mb = _env_float("CAFFE_BUCKET_MB", DEFAULT_BUCKET_MB) if bucket_mb is None \
            else float(bucket_mb)
        self.buckets = plan_buckets(self.net, cap_mb * 2 ** 20)
        self._active, self._pass, self._next = False, 0, 0
        self._check_same_net()
        solver.data_parallel = self
        if register:
            solver.add_callback(self)
            if self.layer_wise and hasattr(self.net, "after_backward"):
                self.net.after_backward(self)

    def _check_same_net(self):
        s = self.solver
        mine = {"solver": s.type, "iter_size": s.param.iter_size,
                "params": [tuple(b.shape) for b in self.net.learnable_params],
                "dtype": str(s.dtype), "buckets": len(self.buckets)}
        everyone = [None] * self.count
        with self.worker.guard("the start-up check of the nets"):
            dist.all_gather_object(everyone, mine, group=self.worker.patient)
        for r, theirs in enumerate(everyone):
            if theirs != mine:
                diff = [k for k in mine if theirs.get(k) != mine[k]]
                raise WorkerError(f"worker {self.rank}: worker {r} trains a different setup "
                                  f"({', '.join(diff)} differ): every worker must run the same "
                                  f"solver and net")

    # -- start ---------------------------------------------------------------------------------
    def broadcast(self):
        """Give every worker worker 0's learned blobs, solver history and iteration."""
        s = self.solver
        with self.worker.guard("the broadcast of worker 0's weights"):
            for blob in list(self.net.learnable_params) + list(s.history):
                dist.broadcast(blob.data, src=0, group=self.worker.group)
            state = torch.tensor([s.iter, s.current_step], dtype=torch.int64)
            dist.broadcast(state, src=0, group=self.worker.control)
        s.iter, s.current_step = (int(v) for v in state.tolist())
        # Weights are filled and lists shuffled; from here the workers need draws of their
        # own (dropout): BVLC offsets the seed by the device.
        if self.rank:
            from . import common
            seed = s.param.random_seed if s.param.random_seed >= 0 else self.worker.seed
            common.set_random_seed(seed + self.rank)

    bcast = broadcast

    # -- solver callbacks -------------------------------------------------------------------------
    def on_start(self):
        self._active, self._pass, self._next = True, 0, 0

    def __call__(self, layer_id):
        """Net.after_backward: layer `layer_id` is done; launch the buckets it completes."""
        if not self._active:
            return
        if self._pass == self.solver.param.iter_size - 1:
            self._launch_until(layer_id)
        if layer_id == 0:
            self._pass += 1

    run = __call__

    def _launch_until(self, layer_id):
        # Buckets go out in one fixed order on every worker, whichever path launches them.
        with self.worker.guard(self._what()):
            while self._next < len(self.buckets) and self.buckets[self._next].layer >= layer_id:
                self.buckets[self._next].launch(self.worker.group)
                self._next += 1

    def on_gradients_ready(self):
        """Sum the gradients over the workers and divide by their number (before the update)."""
        self._launch_until(-1)
        with self.worker.guard(self._what()):
            for bucket in self.buckets:
                bucket.finish(self.scale)
        self._active = False

    def _what(self):
        return f"the gradient all-reduce of iteration {self.solver.iter}"

    # -- agreement ----------------------------------------------------------------------------------
    def mean_loss(self, loss):
        """The loss averaged over the workers (what worker 0 displays)."""
        t = torch.tensor([float(loss)], dtype=torch.float64)
        with self.worker.guard(f"the loss exchange of iteration {self.solver.iter}"):
            dist.all_reduce(t, group=self.worker.control)
        return float(t[0]) / self.count

    def mean_outputs(self, outputs):
        """(name, value, weight) triples with each value averaged over the workers."""
        t = torch.tensor([v for _, v, _ in outputs], dtype=torch.float64)
        with self.worker.guard(f"the output exchange of iteration {self.solver.iter}"):
            dist.all_reduce(t, group=self.worker.control)
        return [(n, float(v) / self.count, w) for (n, _, w), v in zip(outputs, t.tolist())]

    def agree_action(self, request):
        """Stop or snapshot when any worker was asked to (signals reach workers separately)."""
        t = torch.tensor([request == "snapshot", request == "stop"], dtype=torch.int32)
        with self.worker.guard(f"the request exchange of iteration {self.solver.iter}"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.worker.control)
        return "stop" if t[1] else "snapshot" if t[0] else "none"

    def agree_after_test(self, early_exit):
        """Wait, however long, for worker 0's testing; stop everywhere if a stop came during it."""
        t = torch.tensor([bool(early_exit)], dtype=torch.int32)
        with self.worker.guard(f"the wait for worker 0's testing at iteration "
                               f"{self.solver.iter}"):
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.worker.patient)
        return bool(t[0])


class NCCL(DataParallel):
    """pycaffe's caffe.NCCL(solver, uid) for BVLC's python/train.py flow.

        caffe.set_solver_count(n); caffe.set_solver_rank(rank)     # before the solver
        nccl = caffe.NCCL(solver, uid)      # uid = NCCL.new_uid(), made once, given to all
        nccl.bcast(); solver.add_callback(nccl)
        if solver.param.layer_wise_reduce: solver.net.after_backward(nccl)
    """

    def __init__(self, solver, uid):
        if isinstance(uid, bytes):
            uid = uid.decode()
        if _state["worker"] is None:
            init_worker(solver_rank(), solver_count(), device=solver.device, init_method=uid)
        super().__init__(solver, register=False)

    @staticmethod
    def new_uid():
        """A rendezvous for the workers of one machine (a fresh file:// address), as bytes
        like BVLC's NCCL uid on Python 3."""
        return ("file://" + os.path.join(tempfile.gettempdir(),
                                         f"caffe_nccl_{uuid.uuid4().hex}")).encode()


# -- the caffe command's side -------------------------------------------------------------------
class _RankPrefix(logging.Filter):
    def __init__(self, rank):
        super().__init__()
        self.prefix = f"[worker {rank}] "

    def filter(self, record):
        if not str(record.msg).startswith(self.prefix):
            record.msg = self.prefix + str(record.msg)
        return True


def worker_from_env(gpus=()):
    """Join the workers that torchrun-style variables describe; None when running alone.

    gpus lists this machine's devices (the -gpu flag); LOCAL_RANK picks this worker's one.
    Workers other than 0 log warnings and errors only, prefixed with their rank.
    """
    env = env_world()
    if env is None:
        return None
    rank, world, local = env
    gpu = None
    if gpus:
        if not 0 <= local < len(gpus):
            raise CaffeError(f"worker {rank} has LOCAL_RANK {local} but -gpu lists "
                             f"{len(gpus)} device(s) ({', '.join(map(str, gpus))}): give one "
                             f"GPU per worker of this machine")
        gpu = gpus[local]
    if rank:
        logger = logging.getLogger("caffe")
        logger.setLevel(max(logger.level, logging.WARNING))
        for handler in logger.handlers:
            handler.addFilter(_RankPrefix(rank))
    _watch_launcher()
    worker = Worker(rank, world, torch.device("cuda", gpu) if gpu is not None else "cpu")
    worker.gpu = gpu
    log.info("Worker %d of %d (%s, %s)", rank, world,
             f"GPU {gpu}" if gpu is not None else "CPU", worker.backend)
    return worker


@contextlib.contextmanager
def exit_on_failure(worker):
    """Around a worker's training: on any error, log it and leave the process at once.

    A normal interpreter exit would wait for collectives still queued (NCCL's do not give
    up before the timeout); the others learn of the exit from their next exchange."""
    if worker is None:
        yield
        return
    try:
        yield
    except BaseException as e:
        if isinstance(e, KeyboardInterrupt):
            log.error("Interrupted.")
        elif isinstance(e, (CaffeError, OSError)):
            log.error("%s", e)
        else:
            log.exception("worker %d failed", worker.rank)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130 if isinstance(e, KeyboardInterrupt) else 1)


def attach(solver):
    """Make `solver` one of the workers: hooks, then worker 0's state everywhere."""
    sync = DataParallel(solver)
    sync.broadcast()
    return sync


def _watch_launcher():
    """Exit when the launching `caffe train` is gone, rather than train on as an orphan."""
    launcher = os.environ.get("CAFFE_LAUNCHER_PID")
    if not launcher:
        return

    def watch():
        while os.getppid() == int(launcher):
            time.sleep(1.0)
        log.error("The launching caffe process (pid %s) is gone; stopping this worker.",
                  launcher)
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="caffe-launcher-watch", daemon=True).start()


def should_launch(workers, gpus):
    """Whether `caffe train` should start workers itself (not when it is one already)."""
    if env_world() is not None:
        if workers > 1 and os.environ.get("CAFFE_LAUNCHER_PID") != str(os.getppid()):
            log.warning("-workers %d ignored: this process is one of WORLD_SIZE=%s workers "
                        "already", workers, os.environ["WORLD_SIZE"])
        return False
    return max(int(workers or 0), len(gpus or ())) > 1


def worker_count(workers, gpus):
    if gpus and len(gpus) > 1 and workers and workers != len(gpus):
        raise CaffeError(f"-workers {workers} but -gpu lists {len(gpus)} devices: each worker "
                         f"takes one GPU")
    if gpus and len(gpus) == 1 and workers > 1:
        raise CaffeError(f"-workers {workers} on the single GPU {gpus[0]}: each worker needs "
                         f"its own GPU (list them with -gpu 0,1,...)")
    if workers < 0:
        raise CaffeError(f"-workers must be positive, got {workers}")
    return len(gpus) if gpus and len(gpus) > 1 else workers


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe_exit(code):
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


def launch(argv, workers, gpus=()):
    """Run `caffe <argv>` as one worker per GPU (or `workers` CPU workers) on this machine.

    Like torchrun: each worker gets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT.
    Signals to this process reach every worker; when one fails, the others get LAUNCH_GRACE_S
    seconds to stop by themselves and are then terminated. Returns the exit status.
    """
    count = worker_count(workers, gpus)
    import caffe
    root = os.path.dirname(os.path.dirname(os.path.abspath(caffe.__file__)))
    env = dict(os.environ)
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(count),
               LOCAL_WORLD_SIZE=str(count), CAFFE_LAUNCHER_PID=str(os.getpid()),
               PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p))
    # Share the cores instead of every worker starting a thread per core.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
    log.info("Launching %d workers on %s", count,
             f"GPUs {', '.join(map(str, gpus))}" if gpus else "the CPU")
    procs = []

    def forward(signum, frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    handled = [s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s]
    previous = {s: signal.signal(s, forward) for s in handled}
    try:
        for rank in range(count):
            env.update(RANK=str(rank), LOCAL_RANK=str(rank))
            # Own session: a Ctrl-C reaches the workers once, forwarded from here.
            procs.append(subprocess.Popen([sys.executable, "-m", "caffe.tools.caffe", *argv],
                                          env=dict(env), start_new_session=True))
            log.info("Worker %d: pid %d", rank, procs[-1].pid)
        return _watch_workers(procs)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _watch_workers(procs, poll_s=0.1):
    reported, first_failure, deadline = set(), None, None
    while any(p.poll() is None for p in procs):
        for rank, p in enumerate(procs):
            code = p.poll()
            if code not in (None, 0) and rank not in reported:
                reported.add(rank)
                log.error("Worker %d (pid %d) %s", rank, p.pid, _describe_exit(code))
                if first_failure is None:
                    first_failure, deadline = rank, time.monotonic() + LAUNCH_GRACE_S
        if deadline is not None and time.monotonic() > deadline:
            for rank, p in enumerate(procs):
                if p.poll() is None:
                    log.error("Worker %d still runs %g s after worker %d failed; stopping it",
                              rank, LAUNCH_GRACE_S, first_failure)
                    p.terminate()
            _reap(procs, 5.0)
            break
        time.sleep(poll_s)
    codes = [p.wait() for p in procs]
    for rank, code in enumerate(codes):
        if code and rank not in reported:
            log.error("Worker %d (pid %d) %s", rank, procs[rank].pid, _describe_exit(code))
    if any(codes):
        bad = [r for r, c in enumerate(codes) if c]
        log.error("Training failed: worker%s %s did not finish", "s" if len(bad) > 1 else "",
                  ", ".join(map(str, bad)))
        return 1
    return 0


def _reap(procs, wait_s):
    deadline = time.monotonic() + wait_s
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
