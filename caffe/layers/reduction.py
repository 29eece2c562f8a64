"""Layers that combine, select or reduce blob elements: Eltwise, Filter, BatchReindex,
ArgMax, Reduction."""
import math

import torch

from ..blob import canonical_axis_index
from ..errors import CaffeError
from ..layer import Hints, Layer, register_layer
from ..proto import caffe_pb2
from .common_layers import bottom_label, canonical_axis, refuse_in_place


_ELTWISE = caffe_pb2.EltwiseParameter


def eltwise(xs, op, coeffs, out=None):
    """Eltwise's maths: the product, the coefficient-weighted sum or the maximum of xs (into
    `out` if given, else out of place, as autograd needs). The layer (which also keeps MAX's
    argmax) and the torch exporter use it."""
    if op == _ELTWISE.PROD:
        y = torch.mul(xs[0], xs[1], out=out)
        for x in xs[2:]:
            y = torch.mul(y, x, out=out)
    elif op == _ELTWISE.SUM:
        y = xs[0] if coeffs[0] == 1 else torch.mul(xs[0], coeffs[0], out=out)
        y = torch.add(y, xs[1], alpha=coeffs[1], out=out)
        for x, c in zip(xs[2:], coeffs[2:]):
            y = torch.add(y, x, alpha=c, out=out)
    else:
        y = torch.maximum(xs[0], xs[1], out=out)
        for x in xs[2:]:
            y = torch.maximum(y, x, out=out)
    return y


@register_layer
class EltwiseLayer(Layer):
    """top = prod_i x_i, sum_i c_i x_i or max_i x_i (MAX sends the diff to the winning bottom)."""

    type = "Eltwise"
    min_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        if len(p.coeff) not in (0, len(bottom)):
            self.fail(f"takes one coefficient per bottom: {len(p.coeff)} coefficients for "
                      f"{len(bottom)} bottoms")
        if len(p.coeff) and self.op != _ELTWISE.SUM:
            self.fail("only operation SUM takes coefficients")
        self.coeffs = list(p.coeff) or [1.0] * len(bottom)
        if any(top[0] is b for b in bottom[1:]):
            self.fail("only bottom 0 may be computed in place")

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                self.fail(f"bottoms must have the same shape: {bottom_label(self, 0)} has shape "
                          f"{bottom[0].shape}, {bottom_label(self, i)} has shape {blob.shape}")
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        xs, y = [b.data for b in bottom], top[0].data
        if self.op == _ELTWISE.PROD:
            # In place, backward still needs bottom 0's values (Caffe would use the product).
            self.x0 = xs[0].clone() if top[0] is bottom[0] else None
            eltwise(xs, self.op, self.coeffs, out=y)
        elif self.op == _ELTWISE.SUM:
            eltwise(xs, self.op, self.coeffs, out=y)
        else:
            # Caffe gives a tie between bottoms 0 and 1 to bottom 1, later ties to the earlier.
            self.mask = torch.ge(xs[1], xs[0]).to(torch.uint8 if len(xs) < 256 else torch.int32)
            torch.maximum(xs[0], xs[1], out=y)
            for k, x in enumerate(xs[2:], 2):
                self.mask.masked_fill_(x > y, k)
                torch.maximum(y, x, out=y)

    def plan_hints(self, bottom, top):
        # SUM's bottom 0 with coefficient 1 has top 0's diff: a Net recycling diffs may give
        # both one buffer.
        passthrough = self.op == _ELTWISE.SUM and self.coeffs[0] == 1
        return Hints(diff_passthrough=((0, 0),) if passthrough else ())

    def backward(self, top, propagate_down, bottom):
        dy, y = top[0].diff, top[0].data
        # Reversed: in place, bottom 0's diff is top's diff and must be written last.
        for i in reversed(range(len(bottom))):
            if not propagate_down[i]:
                continue
            dx = bottom[i].diff
            if self.op == _ELTWISE.SUM:
                if self.coeffs[i] != 1:
                    torch.mul(dy, self.coeffs[i], out=dx)
                elif not bottom[i].shares_diff_with(top[0]):   # a Net recycling diffs
                    dx.copy_(dy)
            elif self.op == _ELTWISE.MAX:
                dx.copy_(dy).masked_fill_(self.mask != i, 0)
            else:
                xs = [b.data for b in bottom]
                if self.x0 is not None:
                    xs[0] = self.x0
                if self.param.eltwise_param.stable_prod_grad:
                    others = xs[:i] + xs[i + 1:]
                    torch.mul(dy, others[0], out=dx)
                    for x in others[1:]:
                        dx.mul_(x)
                else:
                    torch.mul(dy, y / xs[i], out=dx)


@register_layer
class FilterLayer(Layer):
    """top_i = the items (axis-0 rows) of bottom_i whose selector (last bottom) is non-zero."""

    type = "Filter"
    min_bottom_blobs = 2
    min_top_blobs = 1

    def setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            self.fail(f"needs one top per filtered bottom: {len(bottom) - 1} bottoms (plus the "
                      f"selector) but {len(top)} tops")
        self.num_bottom = len(bottom)
        # Like Caffe, the first reshape keeps every item: the selector has no values yet.
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[-1]
        if selector.num_axes == 0 or any(d != 1 for d in selector.shape[1:]):
            self.fail(f"the selector (last bottom) must have shape (N,) or (N, 1, ...), got "
                      f"{selector.shape}")
        for i, blob in enumerate(bottom[:-1]):
            if blob.num_axes == 0 or blob.shape[0] != selector.shape[0]:
                self.fail(f"{bottom_label(self, i)} of shape {blob.shape} does not have the "
                          f"selector's {selector.shape[0]} items")
        self.index = torch.nonzero(selector.data.view(-1)).view(-1)
        num = selector.shape[0] if self.first_reshape else self.index.numel()
        self.first_reshape = False
        for t, b in zip(top, bottom):
            t.reshape((num,) + b.shape[1:])

    def forward(self, bottom, top):
        for t, b in zip(top, bottom):
            torch.index_select(b.data, 0, self.index, out=t.data)

    def backward(self, top, propagate_down, bottom):
        for t, b, down in zip(top, bottom, propagate_down):
            if down:
                b.diff.zero_()
                b.diff.index_copy_(0, self.index, t.diff)
        if propagate_down[-1]:
            bottom[-1].diff.zero_()  # the selector gets no gradient

    def allow_force_backward(self, bottom_index):
        return bottom_index < self.num_bottom - 1


@register_layer
class BatchReindexLayer(Layer):
    """top[n] = bottom_0[idx[n]] (idx = bottom_1); backward sums diffs into repeated items."""

    type = "BatchReindex"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            self.fail(f"the index bottom must be 1-D, got shape {bottom[1].shape}")
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def forward(self, bottom, top):
        idx, num = bottom[1].data, bottom[0].shape[0] if bottom[0].num_axes else 0
        bad = (idx < 0) | (idx >= num)
        if bad.any():
            raise CaffeError(f"layer '{self.name}' (BatchReindex): index "
                             f"{float(idx[bad][0]):g} is outside [0, {num}), the items of "
                             f"bottom 0")
        self.index = idx.long()  # truncates as Caffe's static_cast<int>
        torch.index_select(bottom[0].data, 0, self.index, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.zero_()
            bottom[0].diff.index_add_(0, self.index, top[0].diff)
        if propagate_down[1]:
            bottom[1].diff.zero_()  # indices get no gradient

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


def argmax(x, p):
    """ArgMax's top (ArgMaxParameter p) in x's dtype: along p.axis the top_k indices (or
    values, out_max_val); per item (N, 1, top_k) indices, or (N, 2, top_k) index and value
    pairs. Ties rank the larger index first. The layer and the torch exporter use it."""
    shape = list(x.shape)
    if p.HasField("axis"):
        axis = canonical_axis_index(p.axis, len(shape), shape)
        dims = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:]))
    else:
        dims = (shape[0], math.prod(shape[1:]), 1)
    # A stable descending sort of the reversed values ranks equal values by larger index.
    values, order = torch.sort(x.reshape(dims).flip(1), stable=True, dim=1, descending=True)
    values, index = values[:, :p.top_k], ((dims[1] - 1) - order[:, :p.top_k]).to(x.dtype)
    if p.HasField("axis"):
        shape[axis] = p.top_k
        return (values if p.out_max_val else index).reshape(shape)
    out = torch.stack([index[..., 0], values[..., 0]], 1) if p.out_max_val else \
        index[..., 0].unsqueeze(1)
    return out.reshape([dims[0], out.shape[1], p.top_k] + [1] * (len(shape) - 3))


@register_layer
class ArgMaxLayer(Layer):
    """top = indices (and/or values) of the top_k largest entries per item, or along axis.

    Ties rank the larger index first, as Caffe's sort of (value, index) pairs does."""

    type = "ArgMax"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)
        p = self.param.argmax_param
        if p.top_k < 1:
            self.fail("top_k must be at least 1")
        if not bottom[0].num_axes:
            self.fail("needs a bottom with at least one axis, got a scalar")
        if p.HasField("axis"):
            axis = canonical_axis(self, bottom[0], p.axis)
            if p.top_k > bottom[0].shape[axis]:
                self.fail(f"top_k {p.top_k} exceeds the size {bottom[0].shape[axis]} of axis "
                          f"{axis}")
        elif p.top_k > bottom[0].count(1):
            self.fail(f"top_k {p.top_k} exceeds the {bottom[0].count(1)} values per item")

    def reshape(self, bottom, top):
        p, x = self.param.argmax_param, bottom[0]
        if p.HasField("axis"):
            axis = canonical_axis(self, x, p.axis)
            shape = list(x.shape)
            shape[axis] = p.top_k
            self.dims = (x.count(0, axis), x.shape[axis], x.count(axis + 1))
        else:
            shape = [1] * max(x.num_axes, 3)
            shape[0], shape[1], shape[2] = x.shape[0], 2 if p.out_max_val else 1, p.top_k
            self.dims = (x.shape[0], x.count(1), 1)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data.view(-1).copy_(argmax(bottom[0].data, self.param.argmax_param).reshape(-1))


_REDUCTION = caffe_pb2.ReductionParameter


def reduce_rows(x, operation, coeff, out=None):
    """Reduction's maths over the rows of x (num, dim): coeff times the sum of x, |x| or x^2
    (MEAN's coeff includes 1 / dim). The layer and the torch exporter use it."""
    if operation == _REDUCTION.ASUM:
        x = x.abs()
    elif operation == _REDUCTION.SUMSQ:
        x = x * x
    y = torch.sum(x, 1, out=out)
    return torch.mul(y, coeff, out=out) if coeff != 1 else y


@register_layer
class ReductionLayer(Layer):
    """top[n] = coeff * reduce(bottom[n, ...]) over all axes from `axis` on
    (reduce = sum, sum |x|, sum x^2 or mean)."""

    type = "Reduction"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        axis = canonical_axis(self, bottom[0], p.axis)
        top[0].reshape(bottom[0].shape[:axis])
        self.num, self.dim = bottom[0].count(0, axis), bottom[0].count(axis)
        self.coeff = p.coeff / max(self.dim, 1) if p.operation == _REDUCTION.MEAN else p.coeff

    def forward(self, bottom, top):
        reduce_rows(bottom[0].data.view(self.num, self.dim), self.param.reduction_param.operation,
                    self.coeff, out=top[0].data.view(self.num))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        op = self.param.reduction_param.operation
        x, dx = bottom[0].data.view(self.num, self.dim), bottom[0].diff.view(self.num, self.dim)
        g = top[0].diff.view(self.num, 1) * self.coeff
        if op == _REDUCTION.ASUM:
            torch.mul(torch.sign(x), g, out=dx)
        elif op == _REDUCTION.SUMSQ:
            torch.mul(x, 2 * g, out=dx)
        else:
            dx.copy_(g.expand(self.num, self.dim))
