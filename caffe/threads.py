"""Threads that never fight: thread counts and the OpenMP wait policy, chosen before torch starts.

A torch CPU build runs its intra-op work on an OpenMP team (one thread per core by default) whose
threads spin for a while after each parallel region, waiting for the next one. Alone on a machine
that is a small gain; beside any other busy process (a second training, CI, the data prefetch
threads, the other workers of `caffe train -workers N`) the spinning threads steal the cores the
real work needs and a training step gets up to 10x slower. So, unless the user chose otherwise:

  * OMP_WAIT_POLICY=PASSIVE (threads sleep when idle) and KMP_BLOCKTIME=0 (the same for an
    Intel OpenMP / MKL build);
  * OMP_NUM_THREADS = the CPUs this process may really use (its affinity set, capped by a cgroup
    v2 cpu.max or v1 CFS quota), divided among the LOCAL_WORLD_SIZE workers of one machine.
    torch reads it for its intra-op pool. The inter-op pool is started only by torch.jit.fork
    and friends, which Caffe's nets never call, so it is left alone.

All of this works only if it runs before torch is imported (libgomp reads its settings when it is
loaded): caffe/__init__.py calls configure() first. A variable the user set is never changed; if
torch is already imported the user owns its pools (and any torch.set_num_threads) and nothing is
touched. Variables set here are listed in CAFFE_THREADS_CHOSEN so that child processes (the
workers of `caffe train -workers N`) choose afresh for their share instead of inheriting ours.
"""
import math
import os
import sys

CHOSEN = "CAFFE_THREADS_CHOSEN"     # the variables configure() set (not the user)
CGROUP_ROOT = "/sys/fs/cgroup"
PROC_CGROUP = "/proc/self/cgroup"
_COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, ValueError):
        return None


def _ancestors(base, rel):
    """base/rel, base/parent-of-rel, ..., base: a limit may sit on any enclosing group."""
    parts = [p for p in rel.strip("/").split("/") if p]
    for n in range(len(parts), -1, -1):
        yield os.path.join(base, *parts[:n])


def _quota_v2(folder):
    text = _read(os.path.join(folder, "cpu.max"))
    if not text:
        return None
    fields = text.split()
    try:
        if fields[0] == "max":
            return None
        return int(fields[0]) / int(fields[1] if len(fields) > 1 else 100000)
    except (ValueError, ZeroDivisionError):
        return None


def _quota_v1(folder):
    quota, period = (_read(os.path.join(folder, f"cpu.cfs_{n}_us")) for n in ("quota", "period"))
    try:
        quota, period = int(quota), int(period)
    except (TypeError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def cgroup_cpus(root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """The CPUs the cgroup quota allows this process (a float, e.g. 1.5), or None when unlimited.

    Reads cgroup v2 (`0::/path` in /proc/self/cgroup, <root>/<path>/cpu.max) and v1 (the `cpu`
    controller's cpu.cfs_quota_us / cpu.cfs_period_us under <root>/cpu or <root>/cpu,cpuacct),
    on the process's group and every enclosing one; the smallest limit wins. Inside a container
    the group path may not exist under the mount: the mount's own top folder is read then.
    """
    text = _read(proc_cgroup) or ""
    limits = []
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, rel = rest.partition(":")
        if hierarchy == "0" and controllers == "":
            folders, reader = [root], _quota_v2
        elif "cpu" in controllers.split(","):
            folders = [os.path.join(root, name) for name in (controllers, "cpu", "cpu,cpuacct")]
            reader = _quota_v1
        else:
            continue
        for base in dict.fromkeys(folders):
            for folder in _ancestors(base, rel):
                limit = reader(folder)
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def affinity_cpus():
    """How many CPUs the scheduler lets this process run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_budget(root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP, affinity=None):
    """Whole CPUs this process may keep busy: min(affinity set, cgroup quota), at least 1.

    A fractional quota is rounded down: 1.5 CPUs run one thread at full speed rather than two
    throttled ones.
    """
    cpus = affinity if affinity is not None else affinity_cpus()
    quota = cgroup_cpus(root, proc_cgroup)
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, int(cpus))


def _local_workers(environ):
    try:
        return max(1, int(environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def choose(environ, budget):
    """The variables to set in `environ` (a dict of the ones the user did not set).

    `budget` is the whole CPUs of this process; workers of one machine split it evenly.
    Variables listed in CAFFE_THREADS_CHOSEN were set by an earlier choose(), not by the
    user, and are chosen again.
    """
    ours = set(filter(None, environ.get(CHOSEN, "").split(",")))

    def user_set(name):
        return name in environ and name not in ours

    out = {}
    if not user_set("OMP_WAIT_POLICY"):
        out["OMP_WAIT_POLICY"] = "PASSIVE"
    if not user_set("KMP_BLOCKTIME"):
        out["KMP_BLOCKTIME"] = "0"
    # torch takes OMP_NUM_THREADS, else MKL_NUM_THREADS: a user's either one wins.
    if not any(user_set(name) for name in _COUNT_VARS):
        out["OMP_NUM_THREADS"] = str(max(1, budget // _local_workers(environ)))
    if out:
        out[CHOSEN] = ",".join(sorted(n for n in out))
    return out


def configure(environ=None, root=CGROUP_ROOT, proc_cgroup=PROC_CGROUP):
    """Choose the thread settings before torch is imported; returns what was set (a dict).

    Does nothing once torch is imported: its pools exist, and they are the user's.
    """
    environ = os.environ if environ is None else environ
    if "torch" in sys.modules:
        return {}
    # Forget our own earlier choice (inherited by a child), keep the user's.
    ours = set(filter(None, environ.get(CHOSEN, "").split(",")))
    for name in ours:
        if name != CHOSEN:
            environ.pop(name, None)
    environ.pop(CHOSEN, None)
    chosen = choose(environ, cpu_budget(root, proc_cgroup))
    environ.update(chosen)
    return chosen


def for_children(environ):
    """Drop our own choices from a child's environment, so the child chooses for its share."""
    for name in filter(None, environ.pop(CHOSEN, "").split(",")):
        environ.pop(name, None)
    return environ


def pipeline_threads(environ=None):
    """Decode threads for a data layer: this worker's share of the CPUs (at least 1)."""
    environ = os.environ if environ is None else environ
    return max(1, cpu_budget() // _local_workers(environ))
