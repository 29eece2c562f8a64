"""Common layers: structural layers that move, split, join and reshape blobs."""
import torch

from ..errors import CaffeError
from ..layer import Hints, Layer, register_layer


def canonical_axis(layer, blob, axis, what="axis"):
    """Blob::CanonicalAxisIndex (caffe.blob.canonical_axis_index), failing with the layer's
    name."""
    try:
        return blob.canonical_axis_index(axis)
    except CaffeError:
        layer.fail(f"{what} {axis} is out of range for a {blob.num_axes}-D bottom of shape "
                   f"{blob.shape}")


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
            # Like Caffe, every top shares the bottom's data (each keeps its own diff), so an
            # in-place consumer of one top changes them all, as in Caffe.
            blob.reshape_like(bottom[0])
            share_storage(blob, bottom[0], diff=False)

    def forward(self, bottom, top):
        for blob in top:
            if not blob.shares_data_with(bottom[0]):
                blob.data.copy_(bottom[0].data)

    def plan_hints(self, bottom, top):
        # The bottom's diff may live in top 0's (a Net recycling diffs): it is summed there.
        return Hints(diff_passthrough=((0, 0),))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        diff, rest = bottom[0].diff, top[1:]
        if not bottom[0].shares_diff_with(top[0]):
            torch.add(top[0].diff, top[1].diff, out=diff) if len(top) > 1 else \
                diff.copy_(top[0].diff)
            rest = top[2:]
        for blob in rest:
            diff.add_(blob.diff)


def bottom_label(layer, i):
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
                          f"{bottom_label(self, 0)} has shape {bottom[0].shape}, "
                          f"{bottom_label(self, i)} has shape {blob.shape}")
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


def share_storage(top, bottom, diff=True):
    """Point top's data (and diff) at bottom's storage, as Caffe's ShareData / ShareDiff; run
    on every reshape, it re-shares after the bottom reallocated. A diff is shared only once
    the bottom's exists, so forward-only nets never allocate one; until then the layers copy."""
    if not top.shares_data_with(bottom):
        top.share_data(bottom)
    if diff and bottom.diff_allocated() and not top.shares_diff_with(bottom):
        top.share_diff(bottom)


class _ReshapeBase(Layer):
    """Shared by Flatten and Reshape: the top holds the bottom's values in a new shape.

    Like Caffe the top shares the bottom's data and diff (each blob keeps its own shape), so
    forward and backward have nothing to compute; they copy only while storage is unshared."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        refuse_in_place(self, bottom, top)

    def plan_hints(self, bottom, top):
        return Hints(keeps_diffs=True)     # a Net recycling diffs leaves these diffs alone

    def forward(self, bottom, top):
        if not top[0].shares_data_with(bottom[0]):
            top[0].data.view(-1).copy_(bottom[0].data.view(-1))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and not top[0].shares_diff_with(bottom[0]):
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
        share_storage(top[0], bottom[0])


def reshaped(shape, dims, axis, num_axes):
    """Reshape's rule: dims replace shape's axes [axis, axis + num_axes) (axis < 0 counts from
    the end, -1 after the last axis; num_axes -1: to the end); a 0 copies the dim there, a -1
    stays, for the caller to infer. The layer and the torch exporter use it."""
    n = len(shape)
    start = axis if axis >= 0 else n + axis + 1
    end = n if num_axes == -1 else start + num_axes
    out = list(shape[:start]) + list(dims) + list(shape[end:])
    for i, d in enumerate(dims):
        if d == 0:
            out[start + i] = shape[start + i]
    return out


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
        old = bottom[0].shape
        for i, d in enumerate(self.dims):
            if d == 0 and start + i >= n:
                self.fail(f"shape dim {i} is 0 (copy) but the bottom {old} has no axis "
                          f"{start + i} to copy")
        shape = reshaped(old, self.dims, p.axis, p.num_axes)
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
        share_storage(top[0], bottom[0])


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


def crop_window(shape, ref_shape, start, offsets):
    """Crop's window into a blob of `shape`: every axis before `start` whole, and from `start`
    on ref_shape's size at the offset given (one for all axes, one per axis, or none: 0).
    The layer and the torch exporter use it."""
    window = [slice(None)] * start
    for i in range(start, len(shape)):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        window.append(slice(offset, offset + ref_shape[i]))
    return tuple(window)


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
        self.window = crop_window(x.shape, ref.shape, start, offsets)
        for i, cut in enumerate(self.window[start:], start):
            if cut.stop > x.shape[i]:
                self.fail(f"crop of size {ref.shape[i]} at offset {cut.start} does not fit axis "
                          f"{i} of size {x.shape[i]} (bottom 0 {x.shape}, bottom 1 {ref.shape})")
        top[0].reshape(x.shape[:start] + ref.shape[start:n])

    def forward(self, bottom, top):
        top[0].data.copy_(bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff.zero_()
            bottom[0].diff[self.window] = top[0].diff
        if propagate_down[1]:
            bottom[1].diff.zero_()  # only its shape is used


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
class PermuteLayer(Layer):
    """SSD's Permute: top = bottom with its axes reordered by permute_param.order (axes not
    named follow in their order); with the identity order top shares bottom's storage."""

    type = "Permute"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        n, order = bottom[0].num_axes, list(self.param.permute_param.order)
        if any(o >= n for o in order) or len(set(order)) != len(order):
            self.fail(f"order {order} must name distinct axes of the {n}-D bottom")
        self.order = order + [i for i in range(n) if i not in order]
        self.identity = self.order == list(range(n))

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape[i] for i in self.order))
        if self.identity:
            share_storage(top[0], bottom[0])

    def forward(self, bottom, top):
        if not top[0].shares_data_with(bottom[0]):
            top[0].data[...] = bottom[0].data.permute(self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and not top[0].shares_diff_with(bottom[0]):
            inverse = sorted(range(len(self.order)), key=self.order.__getitem__)
            bottom[0].diff[...] = top[0].diff.permute(inverse)
