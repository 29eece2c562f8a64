"""Gradient memory of a Net: blobs whose diffs are alive at different times share storage.

The Net mixes this in; Net.backward_from_to plans once per blob shape set when
`recycle_diffs` is set.
"""
import torch


class DiffPlan:
    """The Net's diff-recycling planner (see recycle_diffs)."""

    # Caffe keeps every blob's gradient after backward. A training loop that reads only the
    # learned blobs' gradients may set recycle_diffs: blobs whose diffs are alive at different
    # times of the backward pass then share storage, as few buffers as the busiest moment
    # needs (the gradient memory of eager frameworks). Diffs still alive when backward ends
    # (the inputs', loss weights, diffs nothing writes) keep their own storage; the diffs of
    # other blobs hold scratch values afterwards.
    recycle_diffs = False
    _diff_plan = None

    def _plan_diffs(self):
        key = tuple(b.count() for b in self._blobs)
        if key == self._diff_plan:
            return
        spans, fixed, written, read = {}, set(), set(), set()
        group = list(range(len(self._blobs)))   # blobs whose diffs a layer lets share storage

        def root(b):
            while group[b] != b:
                b = group[b]
            return b
        for i, layer in enumerate(self._layers):
            if not self.layer_need_backward[i]:
                continue
            bottoms = [bid for j, bid in enumerate(self.bottom_ids[i])
                       if self.bottom_need_backward[i][j]]
            written.update(bottoms)
            read.update(self.top_ids[i])
            if getattr(layer, "shares_bottom_diff", False):
                fixed.update(self.bottom_ids[i] + self.top_ids[i])
            for bid in bottoms + self.top_ids[i]:
                lo, hi = spans.get(bid, (i, i))
                spans[bid] = (min(lo, i), max(hi, i))
            for j, k in layer.diff_passthrough():
                if self.bottom_need_backward[i][j]:
                    a, b = root(self.bottom_ids[i][j]), root(self.top_ids[i][k])
                    group[a] = b
        members = {}
        for bid in spans:
            members.setdefault(root(bid), []).append(bid)
        plans = []
        for blobs in members.values():
            if any(b in fixed or b not in written or self._blob_loss_weights[b] for b in blobs):
                continue
            # Nothing reads a diff that no producer takes back: a result of backward, kept.
            lo = min(spans[b][0] for b in blobs) if all(b in read for b in blobs) else -1
            hi = max(spans[b][1] for b in blobs)
            plans.append((hi, lo, max(self._blobs[b].count() for b in blobs), blobs))
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
        buffers = {id(s): torch.zeros(s[0], dtype=self.dtype, device=self.device)
                   for s in slots}
        for bid, slot in assign:
            self._blobs[bid].use_diff_buffer(buffers[id(slot)])
        self._diff_plan = key
