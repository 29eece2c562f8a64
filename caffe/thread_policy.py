"""Intra-op threads per forward: none wasted on nets too small to use them.

torch's intra-op pool (OpenMP) splits each convolution or matrix product over its threads;
waking a second thread and joining it costs ~20-30 us per layer on the project's 2-core
machine, 3-5x the whole work of an MTCNN PNet convolution (5 us on one thread): a 2-thread
forward of PNet took 0.27 ms against 0.21 ms on one, ONet 1.00 against 0.82 ms.

So a forward (Net.forward_from_to: the Python API, `caffe time`, `caffe test`, the solvers)
runs on one thread when its weighted layers (convolutions, inner products) average less than
WORK_PER_LAYER multiply-adds, and on torch.get_num_threads() (the user's or caffe.threads'
choice) otherwise. The count is chosen once per forward and torch's restored afterwards:
switching it between layers was measured to cost up to a millisecond on the next
multi-threaded layer (a small 1-thread convolution then a large 2-thread one: 2.7 ms, against
1.2 ms for the two at fixed counts), while setting it around a forward costs nothing
measurable. The work is the whole net's at its tops' current shapes (the previous
forward's), also for a forward of part of the net: `caffe time` and the solvers' debug_info
path run one layer per call, and must not switch counts from layer to layer.

Policies (CAFFE_THREAD_POLICY in the environment, or set_policy()):

    auto    (default) as above;
    shared  as auto, and large nets use only the CPUs that other runnable tasks leave free
            (/proc/loadavg's instantaneous count, read at most every SAMPLE_S seconds, median
            of the last three). Not the default: beside a CPU-burning process on the
            2-core machine (load 4-6 from other jobs too), 2 threads finished GoogLeNet and
            ShuffleNet forwards 1.3-1.5x sooner than the 1 this policy chose, SRCNN 1.1x
            (SqueezeNet 0.75x: the noise is large): the scheduler gives each thread its
            share, so leaving cores free helps only where the other work must not slow;
    fixed   every forward on torch's current count, as before this policy.
"""
import os
import statistics
import time
import weakref
from typing import List, Optional

WORK_PER_LAYER = 2_000_000  # average multiply-adds (or elements) per layer below which
                            # one thread is faster: ~25 us of thread overhead per layer is
                            # worth 1M multiply-adds saved at ~20 GMAC/s per core
PROBE_BELOW_WORK = 50_000_000   # average multiply-adds per layer below which a compiled
                                # forward's thread count is chosen by timing (Probe): a
                                # MobileNet (20M) or SqueezeNet (13M) ran slower on two
                                # threads than on one, ResNet-50 (77M) and everything larger
                                # ran faster, and probing costs them forwards on one thread
SAMPLE_S = 0.1              # how often the runnable-task count is read
POLICY_ENV = "CAFFE_THREAD_POLICY"
POLICIES = ("auto", "shared", "fixed")
LOADAVG = "/proc/loadavg"

_policy: Optional[str] = None
_samples: List[float] = []
_sampled_at = -1.0
# layer -> (top shape, is_weighted, layer_work)
_work: "weakref.WeakKeyDictionary[object, tuple]" = weakref.WeakKeyDictionary()
# a net's first layer -> net_work's (multiply-adds, weighted layers)
_net_work: "weakref.WeakKeyDictionary[object, tuple]" = weakref.WeakKeyDictionary()


def policy():
    """The policy in force: set_policy()'s, else $CAFFE_THREAD_POLICY, else "auto"."""
    if _policy is not None:
        return _policy
    value = os.environ.get(POLICY_ENV, "auto").strip().lower() or "auto"
    return value if value in POLICIES else "auto"


def set_policy(name):
    """"auto", "shared" or "fixed" (see above), or None (back to $CAFFE_THREAD_POLICY)."""
    global _policy
    if name is not None and name not in POLICIES:
        raise ValueError(f"thread policy must be one of {POLICIES} or None, got {name!r}")
    _policy = name


def runnable_others(path=LOADAVG):
    """Runnable tasks on the machine other than the caller's thread, or None if unknown.

    /proc/loadavg's fourth field is "running/total" scheduling entities now (the caller,
    which is running while it reads, included)."""
    try:
        with open(path) as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - 1)


def free_cpus(budget, others, machine_cpus=None):
    """CPUs of our `budget` left by `others` runnable tasks; they are taken to fill the
    machine's CPUs outside our set first (a container's 2 CPUs on a 64-core host)."""
    machine_cpus = machine_cpus or os.cpu_count() or budget
    if others is None:
        return budget
    return max(1, min(budget, machine_cpus - others))


def _sampled_others(now):
    global _sampled_at
    if now - _sampled_at >= SAMPLE_S:
        _sampled_at = now
        value = runnable_others()
        if value is not None:
            _samples.append(value)
            del _samples[:-3]
    return statistics.median(_samples) if _samples else None


def is_weighted(layer):
    """Whether the layer multiplies by a weight matrix (convolutions, inner products): the
    layers that torch runs on its thread pool whatever their size."""
    blobs = layer.blobs
    return bool(blobs) and len(blobs[0].shape) > 1 and blobs[0].count() > 0


def layer_work(layer, bottom, top):
    """A layer's work: multiply-adds of a weighted layer (output elements, input elements
    for a transposed convolution, times the weights per output channel), else elements of
    its tops."""
    if is_weighted(layer):
        w = layer.blobs[0]
        per_output = w.count() // w.shape[0]
        side = bottom if getattr(layer, "transposed", False) else top
        return sum(b.count() for b in side) * per_output
    return sum(t.count() for t in top)


def cached_work(layer, bottom, top):
    """(is_weighted, layer_work), computed again only when the layer's first top changes
    shape."""
    shape = top[0].shape if top else None
    hit = _work.get(layer)
    if hit is None or hit[0] != shape:
        hit = (shape, is_weighted(layer), layer_work(layer, bottom, top))
        _work[layer] = hit
    return hit[1:]


def forward_threads(budget, work, num_layers, others):
    """The threads for a forward whose `num_layers` weighted layers do `work` in all, with
    `others` runnable tasks besides (0 for "auto", which ignores them)."""
    if budget <= 1 or work < WORK_PER_LAYER * max(1, num_layers):
        return 1
    return free_cpus(budget, others)


def net_work(layers, bottoms, tops, refresh=True):
    """(multiply-adds, weighted layers) of the whole net, from its tops' shapes; a run of
    part of the net (refresh False) reuses the last whole run's figures."""
    key = layers[0]
    if refresh or key not in _net_work:
        work = [w for weighted, w in map(cached_work, layers, bottoms, tops) if weighted]
        _net_work[key] = (sum(work), len(work))
    return _net_work[key]


class ForwardThreads:
    """Sets torch's thread count for one forward; restores it on close()."""

    def __init__(self, torch=None, threads=None):
        self.torch, self.threads = torch, threads
        self.budget = torch.get_num_threads() if torch is not None else threads
        if threads != self.budget:
            torch.set_num_threads(threads)

    def close(self):
        if self.threads != self.budget:
            self.torch.set_num_threads(self.budget)


UNCHANGED = ForwardThreads()    # the threads left as they are


class Probe:
    """The thread count of one net's compiled forwards (caffe.net_inference), chosen by
    timing them. Where the policy gives a forward N > 1 threads, it runs on N or on one,
    whichever took less time (median) over PROBES forwards at each count (N only if it was
    at least GAIN faster); both are timed again every REPROBE forwards, so that a machine
    that turns busy or quiet is followed. With idle threads sleeping (OMP_WAIT_POLICY=PASSIVE,
    caffe.threads), waking them costs tens of microseconds per parallel region: a MobileNet
    forward at batch 1 took 9.0 ms on two threads against 7.9 ms on one, ResNet-50 30 against
    44. The results at two thread counts may differ in the last bits (oneDNN splits its sums
    by thread), as a multi-threaded BLAS's do."""

    PROBES = 3
    WARMUP = 2
    REPROBE = 200
    GAIN = 0.95

    def __init__(self):
        self.allowed, self.plan, self.times = None, [], {}
        self.choice, self.count, self.work = None, 0, None

    def pick(self, allowed):
        """The threads for the next forward, `allowed` being the policy's count."""
        if allowed <= 1:
            return allowed
        if allowed != self.allowed:
            self.allowed, self.choice = allowed, None
            self._start()
        if self.plan:
            return self.plan[-1]
        self.count += 1
        if self.count >= self.REPROBE:
            self._start()
            return self.plan[-1]
        return self.choice

    def _start(self):
        # A block of forwards at each count, N first (popped from the end); the first
        # WARMUP of a block are not counted: a new count packs weights for itself
        # (caffe.net_inference), oneDNN makes its kernels for it, and threads a forward at
        # the other count left asleep wake up (MobileNet: 10-11 ms, then 5-6).
        block = self.PROBES + self.WARMUP
        self.plan = [1] * block + [self.allowed] * block
        self.times = {1: [], self.allowed: []}
        self.warm = 0

    def record(self, threads, seconds):
        """The forward that pick() gave `threads` took `seconds`."""
        if not self.plan or threads != self.plan[-1]:
            return
        self.plan.pop()
        if self.warm >= self.WARMUP:
            self.times[threads].append(seconds)
        self.warm = 0 if self.plan and self.plan[-1] != threads else self.warm + 1
        if not self.plan:
            one = statistics.median(self.times[1])
            many = statistics.median(self.times[self.allowed])
            self.choice = self.allowed if many < self.GAIN * one else 1
            self.count = 0


def for_forward(layers, bottoms, tops, start=0, end=None, probe=None):
    """The ForwardThreads of a forward about to run layers[start:end + 1] (with their bottom
    and top vectors): UNCHANGED when the policy is "fixed" or torch has one thread (nothing
    to choose). One thread for small nets; with "shared", only the free cores for others.

    A compiled whole forward (caffe.net_inference) passes its Probe: the net's work is then
    counted once per program (`probe.work`, which a rebuild clears: its shapes are the
    program's), and a net of small layers runs on one thread where the probe found one
    faster."""
    chosen = policy()
    if chosen == "fixed":
        return UNCHANGED
    import torch
    budget = torch.get_num_threads()
    if budget <= 1 or not layers:
        return UNCHANGED
    if probe is not None:
        if probe.work is None:
            probe.work = net_work(layers, bottoms, tops)
        work, num_weighted = probe.work
    else:
        full = start == 0 and (end is None or end == len(layers) - 1)
        work, num_weighted = net_work(layers, bottoms, tops, refresh=full)
    others = _sampled_others(time.monotonic()) if chosen == "shared" else 0
    threads = forward_threads(budget, work, num_weighted, others)
    if probe is not None and threads > 1 and \
            work < PROBE_BELOW_WORK * max(1, num_weighted):
        threads = probe.pick(threads)
    return ForwardThreads(torch, threads)
