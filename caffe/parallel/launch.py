"""The caffe command's side: one worker per GPU or CPU slot started and watched by
`caffe train`, or this process joining the workers torchrun-style variables describe."""
import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import torch

from .allreduce import DataParallel
from .comm import Worker
from .world import LAUNCH_GRACE_S, env_world
from .. import threads
from ..child_process import child_env, python_module_command
from ..errors import CaffeError

log = logging.getLogger("caffe.parallel")


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
    worker.start_heartbeat(lambda message: _give_up(f"worker {rank}: {message}. Stopping."))
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


def _give_up(message):
    """End this worker now: the main thread may be stuck in a collective that waits for a
    peer that will not come back."""
    log.error("%s", message)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


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


def free_port():
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
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE=str(count),
               LOCAL_WORLD_SIZE=str(count), CAFFE_LAUNCHER_PID=str(os.getpid()),
               PYTHONPATH=os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p))
    # Each worker chooses its threads afresh for its share of the cores (caffe.threads).
    threads.for_children(env)
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
            # Nothing in the working folder is imported (a numpy.py there): caffe.child_process.
            procs.append(subprocess.Popen(python_module_command("caffe.tools.caffe", *argv),
                                          env=child_env(env), start_new_session=True))
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
