"""How a Net runs its layers: the execution plan the Net holds (Net.plan).

Caffe runs layer after layer. So does a Net whose plan is off (Net.optimize = False): the
oracle the tests compare with, and the way to debug one layer. On (the default), a forward of the whole net
that no backward follows runs as a compiled program (caffe.net_inference), and the plan
derives three optimisations from the layers' hints (Layer.plan_hints), each leaving every blob
a user can read as the plain run leaves it:
  fusion          a layer and the next run as one step (BatchNorm + in-place Scale: one kernel);
  hidden inputs   an in-place layer whose backward reads its input (BatchNorm on batch
                  statistics) reads it from a hidden blob its producer wrote, instead of a copy;
  recycled diffs  (recycle_diffs, off by default) blobs whose diffs are alive at different
                  times of backward share storage.
"""
import weakref

import torch

from . import net_inference
from .blob import Blob
from .layer import Step


class NetPlan:
    """The steps a Net runs for forward_from_to and backward_from_to, and the storage they use."""

    # Caffe keeps every blob's gradient after backward. A training loop that reads only the
    # learned blobs' gradients may set recycle_diffs: blobs whose diffs are alive at different
    # times of the backward pass then share storage, as few buffers as the busiest moment
    # needs (the gradient memory of eager frameworks). Diffs still alive when backward ends
    # (the inputs', loss weights, diffs nothing writes) keep their own storage; the diffs of
    # other blobs hold scratch values afterwards.
    recycle_diffs = False

    def __init__(self, net, optimize=True):
        # A proxy: the Net holds its plan, and a cycle would keep a dropped Net (and its data
        # layers' prefetch threads) alive until the cyclic garbage collector runs.
        self.net, self.optimize = weakref.proxy(net), optimize
        layers, n = net._layers, len(net._layers)
        self.hints = [layer.plan_hints(b, t)
                      for layer, b, t in zip(layers, net.bottom_vecs, net.top_vecs)]
        self.fusion = [None] * n        # the Step class running layers i and i + 1 as one
        for i in range(n - 1):
            fusion = self.hints[i].fusion
            if (optimize and fusion and net.layer_need_backward[i] == net.layer_need_backward[i + 1]
                    and not (i and self.fusion[i - 1])
                    and fusion.fits(layers[i], layers[i + 1], net.bottom_vecs[i],
                                    net.top_vecs[i], net.bottom_vecs[i + 1],
                                    net.top_vecs[i + 1])):
                self.fusion[i] = fusion
        self._plan_hidden_inputs()
        self._forward_steps = {}
        self._diff_plan = None
        self._program = None
        self.fixed_reason = net_inference.fixed_reason(net)
        self.replay = False     # the last whole forward ran as the program (net._replay_forward)

    def program(self, start, end):
        """The compiled inference program (caffe.net_inference) for a forward of layers
        start..end, rebuilt where stale; None where that forward must run layer by layer."""
        if not self.optimize or net_inference.why_not(self.net, start, end):
            return None
        if self._program is None or self._program.stale():
            probe = self._program.probe if self._program is not None else None
            self._program = net_inference.Program(self.net, probe)
        return self._program

    def settle(self):
        """Before the plain path runs: blobs take the values the program left pending (a
        layer may write its top through a view it keeps, which a late copy would undo)."""
        if self._program is not None:
            self._program.settle()

    def _plan_hidden_inputs(self):
        net, n = self.net, len(self.net._layers)
        self.hidden = [None] * n            # layer i's hidden input blob
        self.hidden_on = [False] * n        # whether the last run of layer i - 1 filled it
        self.alt_bottom, self.alt_top = list(net.bottom_vecs), list(net.top_vecs)
        for i in range(1, n):
            bottom, before = net.bottom_vecs[i], net.top_vecs[i - 1]
            if not (bottom and net.layer_need_backward[i] and not self.fusion[i - 1]
                    and net._layers[i - 1].type != "Input"     # filled from outside
                    and self.optimize and self.hints[i].own_input
                    and any(t is bottom[0] for t in before)
                    and not any(b is bottom[0] for b in net.bottom_vecs[i - 1])):
                continue
            # The producer writes the hidden blob, the layer reads it and writes the visible
            # blob as before; the hidden blob shares the visible one's diff, as in-place
            # layers share it.
            hidden = Blob((), net.dtype, net.device)
            self.hidden[i] = hidden
            self.alt_bottom[i] = [hidden] + bottom[1:]
            self.alt_top[i - 1] = [hidden if t is bottom[0] else t for t in before]

    def _vecs(self, i):
        """Layer i's bottom and top vectors as the last forward ran it (hidden inputs)."""
        net = self.net
        bottom = self.alt_bottom[i] if self.hidden_on[i] else net.bottom_vecs[i]
        on_top = i + 1 < len(net._layers) and self.hidden_on[i + 1]
        return bottom, self.alt_top[i] if on_top else net.top_vecs[i]

    def _step(self, i, count=1):
        net = self.net
        units = [(net._layers[k], *self._vecs(k), net.bottom_need_backward[k],
                  net.layer_need_backward[k]) for k in range(i, i + count)]
        cls = self.fusion[i] if count == 2 else Step
        return cls(tuple(range(i, i + count)), units)

    def forward_steps(self, start, end):
        """The steps that run layers start..end inclusive."""
        # A hidden input is used only where its producer runs in the same call.
        for k in range(start, min(end + 2, len(self.hidden))):
            if self.hidden[k] is not None:
                self.hidden_on[k] = start < k <= end
        steps = self._forward_steps.get((start, end))
        if steps is None:
            steps, i = [], start
            while i <= end:
                count = 2 if self.fusion[i] and i < end else 1
                steps.append(self._step(i, count))
                i += count
            self._forward_steps[(start, end)] = steps
        return steps

    def backward_steps(self, start, end):
        """The steps that run backward from layer start down to layer end inclusive."""
        if self.recycle_diffs and self.optimize:
            self._plan_diffs()
        i = start
        while i >= end:
            self._share_hidden_diff(i)
            self._share_hidden_diff(i + 1)
            if i > end and self.fusion[i - 1] and self.net.layer_need_backward[i]:
                self._share_hidden_diff(i - 1)
                yield self._step(i - 1, 2)
                i -= 2
            else:
                yield self._step(i)
                i -= 1

    def _share_hidden_diff(self, i):
        if i < len(self.hidden) and self.hidden_on[i]:
            hidden, blob = self.hidden[i], self.net.bottom_vecs[i][0]
            if not hidden.shares_diff_with(blob):
                hidden.share_diff(blob)

    def _plan_diffs(self):
        net = self.net
        key = tuple(b.count() for b in net._blobs)
        if key == self._diff_plan:
            return
        spans, fixed, written, read = {}, set(), set(), set()
        group = list(range(len(net._blobs)))   # blobs whose diffs a layer lets share storage

        def root(b):
            while group[b] != b:
                b = group[b]
            return b
        for i, hints in enumerate(self.hints):
            if not net.layer_need_backward[i]:
                continue
            bottoms = [bid for j, bid in enumerate(net.bottom_ids[i])
                       if net.bottom_need_backward[i][j]]
            written.update(bottoms)
            read.update(net.top_ids[i])
            if hints.keeps_diffs:
                fixed.update(net.bottom_ids[i] + net.top_ids[i])
            for bid in bottoms + net.top_ids[i]:
                lo, hi = spans.get(bid, (i, i))
                spans[bid] = (min(lo, i), max(hi, i))
            for j, k in hints.diff_passthrough:
                if net.bottom_need_backward[i][j]:
                    a, b = root(net.bottom_ids[i][j]), root(net.top_ids[i][k])
                    group[a] = b
        members = {}
        for bid in spans:
            members.setdefault(root(bid), []).append(bid)
        plans = []
        for blobs in members.values():
            if any(b in fixed or b not in written or net._blob_loss_weights[b] for b in blobs):
                continue
            # Nothing reads a diff that no producer takes back: a result of backward, kept.
            lo = min(spans[b][0] for b in blobs) if all(b in read for b in blobs) else -1
            hi = max(spans[b][1] for b in blobs)
            plans.append((hi, lo, max(net._blobs[b].count() for b in blobs), blobs))
        slots = []      # [size, lowest layer index of the current tenant]
        assign = []
        for hi, lo, count, blobs in sorted(plans, key=lambda p: -p[0]):
            free = [s for s in slots if s[1] > hi]
            fits = [s for s in free if s[0] >= count]
            slot = min(fits, key=lambda s: s[0]) if fits else \
                max(free, key=lambda s: s[0]) if free else None
            if slot is None:
                slot = [0, 0]
                slots.append(slot)
            slot[0], slot[1] = max(slot[0], count), lo
            assign += [(bid, slot) for bid in blobs]
        buffers = {id(s): torch.zeros(s[0], dtype=net.dtype, device=net.device) for s in slots}
        for bid, slot in assign:
            net._blobs[bid].use_diff_buffer(buffers[id(slot)])
        self._diff_plan = key
