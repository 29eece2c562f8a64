"""Common layers: structural layers that move, split, join, select and reduce blobs."""
import torch

from ..errors import CaffeError
from ..layer import Layer, register_layer
from ..proto import caffe_pb2


def canonical_axis(layer, blob, axis, what="axis"):
    """Blob::CanonicalAxisIndex, failing with the layer's name."""
    n = blob.num_axes
    if not -n <= axis < max(n, 1):
        layer.fail(f"{what} {axis} is out of range for a {n}-D bottom of shape {blob.shape}")
    return axis + n if axis < 0 else axis


def legacy_axis(layer, blob, param, name, legacy):
    """Concat's and Slice's axis, or their legacy (non-negative) concat_dim/slice_dim."""
    if param.HasField(name) and param.HasField(legacy):
        layer.fail(f"give either {name} or {legacy}, not both")
    if param.HasField(legacy):
        dim = getattr(param, legacy)
        if dim >= blob.num_axes:
            layer.fail(f"{legacy} {dim} is out of range for a bottom of shape {blob.shape}")
        return dim
    return canonical_axis(layer, blob, getattr(param, name))


def refuse_in_place(layer, bottom, top):
    if any(t is b for t in top for b in bottom):
        layer.fail("does not allow in-place computation")


@register_layer
class InputLayer(Layer):
    """Net input: tops shaped by input_param.shape, values set from outside."""

    type = "Input"
    exact_num_bottom_blobs = 0
    min_top_blobs = 1

    def setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            self.fail(f"input_param must give 0, 1 or {len(top)} shapes, got {len(shapes)}")
        for i, blob in enumerate(top):
            if len(shapes):
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        """Inputs keep the shape they were given."""

    def forward(self, bottom, top):
        """Inputs are filled from outside."""


@register_layer
class SplitLayer(Layer):
    """top_i = bottom for every i; backward sums the top diffs."""

    type = "Split"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def reshape(self, bottom, top):
        for blob in top:
            # Caffe shares storage; a split top may not be written in place by a consumer.
            blob.reshape_like(bottom[0])

    def forward(self, bottom, top):
        for blob in top:
            blob.data.copy_(bottom[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff = bottom[0].diff
        torch.add(top[0].diff, top[1].diff, out=diff) if len(top) > 1 else diff.copy_(top[0].diff)
        for blob in top[2:]:
            diff.add_(blob.diff)


def _bottom_label(layer, i):
    names = layer.param.bottom
    return f"bottom {i} ('{names[i]}')" if i < len(names) else f"bottom {i}"


@register_layer
class ConcatLayer(Layer):
    """top = [bottom_0, bottom_1, ...] joined along axis; each bottom's diff is its slice."""

    type = "Concat"
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        self.axis = legacy_axis(self, bottom[0], self.param.concat_param, "axis", "concat_dim")
        shape = list(bottom[0].shape)
        for i, blob in enumerate(bottom[1:], 1):
            if blob.num_axes != len(shape) or any(
                    a != b for j, (a, b) in enumerate(zip(shape, blob.shape)) if j != self.axis):
                self.fail(f"bottoms must have the same shape except along axis {self.axis}: "
                          f"{_bottom_label(self, 0)} has shape {bottom[0].shape}, "
                          f"{_bottom_label(self, i)} has shape {blob.shape}")
            shape[self.axis] += blob.shape[self.axis]
        top[0].reshape(shape)

    def forward(self, bottom, top):
        torch.cat([b.data for b in bottom], self.axis, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        offset = 0
        for blob, down in zip(bottom, propagate_down):
            size = blob.shape[self.axis]
            if down:
                blob.diff.copy_(top[0].diff.narrow(self.axis, offset, size))
            offset += size


@register_layer
class SliceLayer(Layer):
    """top_i = bottom[p_(i-1):p_i] along axis (equal pieces without slice_point)."""

    type = "Slice"
    exact_num_bottom_blobs = 1
    min_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        p = self.param.slice_param
        self.axis = legacy_axis(self, bottom[0], p, "axis", "slice_dim")
        length, points = bottom[0].shape[self.axis], list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                self.fail(f"{len(points)} slice points cut {len(points) + 1} pieces, but the "
                          f"layer has {len(top)} tops")
            bounds = [0] + points + [length]
            if any(a >= b for a, b in zip(bounds, bounds[1:])):
                self.fail(f"slice_point must be strictly increasing and inside (0, {length}), "
                          f"the size of axis {self.axis}; got {points}")
            self.sizes = [b - a for a, b in zip(bounds, bounds[1:])]
        else:
            if length % len(top):
                self.fail(f"{len(top)} tops do not evenly divide axis {self.axis} of size "
                          f"{length}; give slice_point")
            self.sizes = [length // len(top)] * len(top)
        shape = list(bottom[0].shape)
        for blob, size in zip(top, self.sizes):
            shape[self.axis] = size
            blob.reshape(shape)

    def forward(self, bottom, top):
        for blob, piece in zip(top, torch.split(bottom[0].data, self.sizes, self.axis)):
            blob.data.copy_(piece)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            torch.cat([t.diff for t in top], self.axis, out=bottom[0].diff)


_ELTWISE = caffe_pb2.EltwiseParameter


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
                self.fail(f"bottoms must have the same shape: {_bottom_label(self, 0)} has shape "
                          f"{bottom[0].shape}, {_bottom_label(self, i)} has shape {blob.shape}")
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        xs, y = [b.data for b in bottom], top[0].data
        if self.op == _ELTWISE.PROD:
            # In place, backward still needs bottom 0's values (Caffe would use the product).
            self.x0 = xs[0].clone() if top[0] is bottom[0] else None
            torch.mul(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y.mul_(x)
        elif self.op == _ELTWISE.SUM:
            c = self.coeffs
            if c[0] == 1:
                torch.add(xs[0], xs[1], alpha=c[1], out=y)
            else:
                torch.mul(xs[0], c[0], out=y).add_(xs[1], alpha=c[1])
            for x, ci in zip(xs[2:], c[2:]):
                y.add_(x, alpha=ci)
        else:
            # Caffe gives a tie between bottoms 0 and 1 to bottom 1, later ties to the earlier.
            self.mask = torch.ge(xs[1], xs[0]).to(torch.uint8 if len(xs) < 256 else torch.int32)
            torch.maximum(xs[0], xs[1], out=y)
            for k, x in enumerate(xs[2:], 2):
                self.mask.masked_fill_(x > y, k)
                torch.maximum(y, x, out=y)

    def backward(self, top, propagate_down, bottom):
        dy, y = top[0].diff, top[0].data
        # Reversed: in place, bottom 0's diff is top's diff and must be written last.
        for i in reversed(range(len(bottom))):
            if not propagate_down[i]:
                continue
            dx = bottom[i].diff
            if self.op == _ELTWISE.SUM:
                dx.copy_(dy) if self.coeffs[i] == 1 else torch.mul(dy, self.coeffs[i], out=dx)
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


class _ReshapeBase(Layer):
    """Shared by Flatten and Reshape: the top holds the bottom's values in a new shape.

    Caffe shares the storage. Blob.share_data hands an equal-shaped blob the very same
    buffer object, so a later reshape of either blob would re-view the other; a copy costs
    one pass over the blob and keeps the two shapes independent."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def forward(self, bottom, top):
        top[0].data.view(-1).copy_(bottom[0].data.view(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.view(-1).copy_(top[0].diff.view(-1))


@register_layer
class FlattenLayer(_ReshapeBase):
    """top = bottom with axes axis..end_axis merged into one."""

    type = "Flatten"

    def reshape(self, bottom, top):
        p, shape = self.param.flatten_param, bottom[0].shape
        start = canonical_axis(self, bottom[0], p.axis)
        end = canonical_axis(self, bottom[0], p.end_axis, "end_axis")
        if end < start:
            self.fail(f"end_axis {p.end_axis} comes before axis {p.axis} in shape {shape}")
        top[0].reshape(shape[:start] + (bottom[0].count(start, end + 1),) + shape[end + 1:])


@register_layer
class ReshapeLayer(_ReshapeBase):
    """top = bottom in the shape reshape_param gives for axes [axis, axis + num_axes)
    (0 copies the bottom's dim, -1 infers one dim from the count)."""

    type = "Reshape"

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.dims = list(self.param.reshape_param.shape.dim)
        if sum(d == -1 for d in self.dims) > 1:
            self.fail(f"shape {self.dims} has more than one -1 (inferred) dimension")
        if any(d < -1 for d in self.dims):
            self.fail(f"shape {self.dims} has a dimension below -1")

    def reshape(self, bottom, top):
        p, n, count = self.param.reshape_param, bottom[0].num_axes, bottom[0].count()
        start = p.axis if p.axis >= 0 else n + p.axis + 1
        if not 0 <= start <= n:
            self.fail(f"axis {p.axis} is out of range for a {n}-D bottom")
        if p.num_axes < -1 or (p.num_axes >= 0 and start + p.num_axes > n):
            self.fail(f"num_axes {p.num_axes} from axis {start} does not fit a {n}-D bottom")
        end = n if p.num_axes == -1 else start + p.num_axes
        old = bottom[0].shape
        shape = list(old[:start]) + self.dims + list(old[end:])
        for i, d in enumerate(self.dims):
            if d == 0:
                if start + i >= n:
                    self.fail(f"shape dim {i} is 0 (copy) but the bottom {old} has no axis "
                              f"{start + i} to copy")
                shape[start + i] = old[start + i]
        if -1 in self.dims:
            at = start + self.dims.index(-1)
            known = 1
            for j, d in enumerate(shape):
                known *= d if j != at else 1
            if known == 0 or count % known:
                self.fail(f"cannot infer the -1 dim of {shape}: bottom {old} has {count} "
                          f"elements, not a multiple of {known}")
            shape[at] = count // known
        total = 1
        for d in shape:
            total *= d
        if total != count:
            self.fail(f"cannot reshape bottom {old} ({count} elements) to {tuple(shape)} "
                      f"({total} elements)")
        top[0].reshape(shape)


@register_layer
class SilenceLayer(Layer):
    """Consumes its bottoms and outputs nothing; backward writes zero diffs."""

    type = "Silence"
    min_bottom_blobs = 1
    exact_num_top_blobs = 0

    def reshape(self, bottom, top):
        """No tops."""

    def forward(self, bottom, top):
        """Nothing to compute."""

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff.zero_()


@register_layer
class TileLayer(Layer):
    """top = bottom repeated `tiles` times along axis (as blocks of axis..end); backward sums."""

    type = "Tile"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)
        p = self.param.tile_param
        if not p.HasField("tiles"):
            self.fail("tile_param.tiles must be given")
        if p.tiles <= 0:
            self.fail(f"tiles must be positive, got {p.tiles}")

    def reshape(self, bottom, top):
        axis, tiles = canonical_axis(self, bottom[0], self.param.tile_param.axis), \
            self.param.tile_param.tiles
        shape = list(bottom[0].shape)
        shape[axis] *= tiles
        top[0].reshape(shape)
        self.dims = (bottom[0].count(0, axis), tiles, bottom[0].count(axis))

    def forward(self, bottom, top):
        outer, tiles, inner = self.dims
        top[0].data.view(self.dims).copy_(bottom[0].data.view(outer, 1, inner))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            outer, _, inner = self.dims
            torch.sum(top[0].diff.view(self.dims), 1, out=bottom[0].diff.view(outer, inner))


@register_layer
class CropLayer(Layer):
    """top = bottom_0[offset : offset + size] on every axis from `axis` on, size from bottom_1."""

    type = "Crop"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def reshape(self, bottom, top):
        p, x, ref = self.param.crop_param, bottom[0], bottom[1]
        start, n, offsets = canonical_axis(self, x, p.axis), x.num_axes, list(p.offset)
        if len(offsets) > 1 and start + len(offsets) != n:
            self.fail(f"{len(offsets)} offsets given for the {n - start} axes from axis {start}")
        if ref.num_axes < n:
            self.fail(f"bottom 1 of shape {ref.shape} has fewer axes than bottom 0 {x.shape}")
        shape, self.window = list(x.shape), [slice(None)] * start
        for i in range(start, n):
            offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
            size = ref.shape[i]
            if offset + size > x.shape[i]:
                self.fail(f"crop of size {size} at offset {offset} does not fit axis {i} of "
                          f"size {x.shape[i]} (bottom 0 {x.shape}, bottom 1 {ref.shape})")
            shape[i] = size
            self.window.append(slice(offset, offset + size))
        self.window = tuple(self.window)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].data.copy_(bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.zero_()
            bottom[0].diff[self.window] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff.zero_()  # only its shape is used


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
                self.fail(f"{_bottom_label(self, i)} of shape {blob.shape} does not have the "
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


@register_layer
class ParameterLayer(Layer):
    """top = a learned blob of parameter_param.shape (zeros until trained or loaded)."""

    type = "Parameter"
    exact_num_bottom_blobs = 0
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        if not self.blobs:
            self.blobs = [self.new_blob(tuple(self.param.parameter_param.shape.dim))]

    def reshape(self, bottom, top):
        top[0].reshape_like(self.blobs[0])

    def forward(self, bottom, top):
        top[0].data.copy_(self.blobs[0].data)

    def backward(self, top, propagate_down, bottom):
        if self.param_propagate_down[0]:
            self.blobs[0].diff.add_(top[0].diff)


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
        p, (outer, dim, inner) = self.param.argmax_param, self.dims
        # A stable descending sort of the reversed values ranks equal values by larger index.
        values, order = torch.sort(bottom[0].data.view(self.dims).flip(1), stable=True, dim=1,
                                   descending=True)
        values, index = values[:, :p.top_k], (dim - 1) - order[:, :p.top_k]
        if p.HasField("axis"):
            top[0].data.view(outer, p.top_k, inner).copy_(values if p.out_max_val else index)
        else:
            out = top[0].data.view(outer, -1, p.top_k)
            out[:, 0] = index[..., 0]
            if p.out_max_val:
                out[:, 1] = values[..., 0]


_REDUCTION = caffe_pb2.ReductionParameter


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
        op, x, y = self.param.reduction_param.operation, bottom[0].data.view(self.num, self.dim), \
            top[0].data.view(self.num)
        if op == _REDUCTION.ASUM:
            x = x.abs()
        elif op == _REDUCTION.SUMSQ:
            x = x * x
        torch.sum(x, 1, out=y)
        if self.coeff != 1:
            y.mul_(self.coeff)

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
