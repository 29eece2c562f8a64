"""Rendezvous and the process groups: joining the workers, noticing the ones that are gone,
and turning a failed collective into a WorkerError that names what happened."""
import atexit
import contextlib
import logging
import os
import socket
import time

import torch
import torch.distributed as dist

from .heartbeat import Heartbeat, rendezvous_store
from .world import (PATIENT_TIMEOUT, WorkerError, world_state, env_world, heartbeat_timeout,
                    rendezvous_timeout, set_solver_count, set_solver_rank, timeout)
from ..errors import CaffeError

log = logging.getLogger("caffe.parallel")


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
    worker 0's root-only work (testing), which may take longer than the timeout. Joining waits
    CAFFE_RDZV_TIMEOUT seconds for everyone to turn up; the groups' collectives then wait
    CAFFE_DIST_TIMEOUT; start_heartbeat() notices a silent worker within CAFFE_DIST_HEARTBEAT.
    """
    heartbeat = None

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
            self._join(init_method)
            # The world group waited rendezvous_timeout; gradients get the collective timeout.
            self.group = dist.new_group(backend=self.backend, timeout=self.timeout)
        else:
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
        from .. import common
        common.set_random_seed(self.seed)
        world_state["worker"] = self
        atexit.register(self._at_exit)

    def _join(self, init_method):
        wait = rendezvous_timeout()
        where = (f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
                 if init_method == "env://" else init_method)
        log.info("Worker %d of %d: joining the others at %s (waiting up to %g s, "
                 "CAFFE_RDZV_TIMEOUT)", self.rank, self.world, where, wait.total_seconds())
        try:
            dist.init_process_group(self.backend, init_method=init_method, rank=self.rank,
                                    world_size=self.world, timeout=wait)
        except (RuntimeError, ValueError) as e:
            detail = _first_line(e)
            if "time" in detail.lower() and "out" in detail.lower():
                whom = ("not all the other workers joined" if self.rank == 0 else
                        "worker 0's rendezvous did not answer, or not all workers joined")
                raise WorkerError(
                    f"worker {self.rank}: {whom} at {where} within {wait.total_seconds():g} s "
                    f"(CAFFE_RDZV_TIMEOUT): check that every host is up and started, and that "
                    f"MASTER_ADDR/MASTER_PORT name worker 0's host. ({detail})") from None
            raise WorkerError(f"worker {self.rank}: could not join the {self.world} workers "
                              f"over {self.backend} at {where}: {detail}") from None

    def describe(self, rank):
        host, pid = self.peers[rank]
        return f"worker {rank} (pid {pid} on {host})"

    def start_heartbeat(self, on_lost):
        """Watch the others through the rendezvous store; on_lost(message) when one is silent."""
        stall = heartbeat_timeout().total_seconds()
        found = rendezvous_store(min(stall, 10.0))
        if found is None:
            return None
        store, where = found
        # Under torchrun the store is its agent's on node 0; else worker 0 serves it.
        owner = ("node 0's torchrun agent (the host of worker 0)"
                 if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" else
                 self.describe(0) if self.rank else None)
        self.heartbeat = Heartbeat(store, where, self.rank, self.world, stall, on_lost,
                                   describe=self.describe, store_owner=owner).start()
        return self.heartbeat

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
                if not dead and self.heartbeat is not None:
                    dead = self._silent_peers()
                remote = any(h != socket.gethostname() for h, _ in getattr(self, "peers", ()))
                cause = "; ".join(dead) if dead else (
                    "a worker on another machine crashed, or the network failed" if remote
                    else "another worker crashed or closed its connection")
            raise WorkerError(f"worker {self.rank}: lost contact with the other workers during "
                              f"{what}: {cause}. Stopping. ({detail})") from None

    def _silent_peers(self, wait_s=3.0):
        # Those on other hosts: the ones whose heartbeat stops while the others' go on.
        time.sleep(wait_s)
        quiet = self.heartbeat.silent(wait_s * 0.8)
        return [f"{self.describe(r)} has stopped answering (gone, or its host is)"
                for r in quiet]

    def _at_exit(self):
        # pycaffe scripts just end: a process group left alive aborts at teardown now and
        # then. No barrier here: after an error the others may wait in another collective.
        if world_state["worker"] is self:
            world_state["worker"] = None
            if self.heartbeat is not None:
                self.heartbeat.stop()
            if dist.is_initialized():
                dist.destroy_process_group()
            self._drop_groups()

    def _drop_groups(self):
        # A group object that outlives destroy_process_group dies in interpreter teardown,
        # where its threads abort the process.
        self.group = self.control = self.patient = None

    def close(self):
        """Leave the process group once every worker is done (the end of training)."""
        if world_state["worker"] is self:
            world_state["worker"] = None
        if dist.is_initialized():
            # Worker 0 serves the rendezvous store: tearing down in step avoids aborts
            # ("terminate called without an active exception") in the others.
            with self.guard("the final barrier"):
                dist.barrier(group=self.patient)
            if self.heartbeat is not None:
                self.heartbeat.stop()
            dist.destroy_process_group()
        self._drop_groups()


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def init_worker(rank=None, world=None, device="cpu", backend=None, init_method="env://"):
    """Join the process group as worker `rank` of `world` (default: torchrun's variables)."""
    if world_state["worker"] is not None:
        return world_state["worker"]
    if rank is None or world is None:
        env = env_world()
        if env is None:
            raise CaffeError("init_worker: no rank and world size given and WORLD_SIZE is not "
                             "set above 1")
        rank, world = env[0], env[1]
    return Worker(rank, world, device, backend, init_method)
