"""Gradients summed over the workers in buckets, launched as backward completes them
(layer_wise_reduce), and the solver-side agreement on loss, outputs, stop and snapshot."""
import torch
import torch.distributed as dist

from .world import DEFAULT_BUCKET_MB, WorkerError, env_float, world_state
from ..blob import note_weight_write
from ..errors import CaffeError


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
        worker = world_state["worker"]
        if worker is None:
            raise CaffeError("data-parallel training needs the workers' process group first: "
                             "run under `caffe train -workers N` / `-gpu 0,1`, torchrun, or call "
                             "caffe.parallel.init_worker()")
        self.worker, self.solver, self.net = worker, solver, solver.net
        self.count, self.rank = worker.world, worker.rank
        self.scale = 1.0 / self.count
        self.layer_wise = (solver.param.layer_wise_reduce if layer_wise is None
                           else bool(layer_wise))
        cap_mb = env_float("CAFFE_BUCKET_MB", DEFAULT_BUCKET_MB) if bucket_mb is None \
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
        note_weight_write()     # the collective wrote the blobs behind torch's counters
        # Weights are filled and lists shuffled; from here the workers need draws of their
        # own (dropout): BVLC offsets the seed by the device.
        if self.rank:
            from .. import common
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
