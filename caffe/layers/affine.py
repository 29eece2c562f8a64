"""Affine layers: learned (or given) linear maps and per-channel scale and shift."""
import torch

from ..errors import CaffeError
from ..layer import Layer, register_layer
from ..proto import caffe_pb2
from .common_layers import canonical_axis


@register_layer
class InnerProductLayer(Layer):
    """y = x W^T + b, x flattened from `axis` on to K inputs; W is (N, K), (K, N) if transpose."""

    type = "InnerProduct"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        if p.num_output <= 0:
            self.fail("inner_product_param.num_output must be positive")
        self.k = bottom[0].count(canonical_axis(self, bottom[0], p.axis))
        if not self.blobs:  # not loaded from a .caffemodel
            shape = (self.k, p.num_output) if p.transpose else (p.num_output, self.k)
            self.blobs = [self.new_blob(shape, p.weight_filler)]
            if p.bias_term:
                self.blobs.append(self.new_blob((p.num_output,), p.bias_filler))
        want = [self.k * p.num_output] + ([p.num_output] if p.bias_term else [])
        if [b.count() for b in self.blobs] != want:
            self.fail(f"learned blobs of shapes {[b.shape for b in self.blobs]} do not fit "
                      f"{self.k} inputs and {p.num_output} outputs")

    def reshape(self, bottom, top):
        p = self.param.inner_product_param
        axis = canonical_axis(self, bottom[0], p.axis)
        if bottom[0].count(axis) != self.k:
            self.fail(f"bottom of shape {bottom[0].shape} has {bottom[0].count(axis)} inputs from "
                      f"axis {axis}, but the weights take {self.k}")
        self.m = bottom[0].count(0, axis)
        top[0].reshape(bottom[0].shape[:axis] + (p.num_output,))

    def _weight(self):
        """W as the (K, N) right-hand factor of x W^T (a view; loaded blobs may be 4-D)."""
        p = self.param.inner_product_param
        w = self.blobs[0].data
        return w.view(self.k, p.num_output) if p.transpose else w.view(p.num_output, self.k).t()

    def forward(self, bottom, top):
        n = self.param.inner_product_param.num_output
        x, y = bottom[0].data.view(self.m, self.k), top[0].data.view(self.m, n)
        if len(self.blobs) > 1:
            torch.addmm(self.blobs[1].data.view(n), x, self._weight(), out=y)
        else:
            torch.mm(x, self._weight(), out=y)

    def backward(self, top, propagate_down, bottom):
        p = self.param.inner_product_param
        n = p.num_output
        dy, x = top[0].diff.view(self.m, n), bottom[0].data.view(self.m, self.k)
        if self.param_propagate_down[0]:
            if p.transpose:
                self.blobs[0].diff.view(self.k, n).addmm_(x.t(), dy)
            else:
                self.blobs[0].diff.view(n, self.k).addmm_(dy.t(), x)
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            self.blobs[1].diff.view(n).add_(dy.sum(0))
        if propagate_down[0]:
            torch.mm(dy, self._weight().t(), out=bottom[0].diff.view(self.m, self.k))


@register_layer
class EmbedLayer(Layer):
    """y[..., :] = W[x] + b: row x of the (input_dim, num_output) table W for each integer x."""

    type = "Embed"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.embed_param
        if p.num_output <= 0 or p.input_dim <= 0:
            self.fail("embed_param.num_output and input_dim must be positive")
        if not self.blobs:
            self.blobs = [self.new_blob((p.input_dim, p.num_output), p.weight_filler)]
            if p.bias_term:
                self.blobs.append(self.new_blob((p.num_output,), p.bias_filler))
        want = [p.input_dim * p.num_output] + ([p.num_output] if p.bias_term else [])
        if [b.count() for b in self.blobs] != want:
            self.fail(f"learned blobs of shapes {[b.shape for b in self.blobs]} do not fit "
                      f"input_dim {p.input_dim} and num_output {p.num_output}")

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.param.embed_param.num_output,))

    def forward(self, bottom, top):
        p = self.param.embed_param
        x = bottom[0].data.reshape(-1)
        index = x.long()
        bad = (x != index) | (index < 0) | (index >= p.input_dim)
        if bad.any():
            raise CaffeError(f"layer '{self.name}' (Embed): input {float(x[bad][0]):g} is not an "
                             f"integer index in [0, {p.input_dim})")
        self.index = index
        y = top[0].data.view(-1, p.num_output)
        torch.index_select(self.blobs[0].data.view(p.input_dim, p.num_output), 0, index, out=y)
        if p.bias_term:
            y.add_(self.blobs[1].data.view(p.num_output))

    def backward(self, top, propagate_down, bottom):
        p = self.param.embed_param
        dy = top[0].diff.view(-1, p.num_output)
        if self.param_propagate_down[0]:
            self.blobs[0].diff.view(p.input_dim, p.num_output).index_add_(0, self.index, dy)
        if p.bias_term and self.param_propagate_down[1]:
            self.blobs[1].diff.view(p.num_output).add_(dy.sum(0))
        if propagate_down[0]:
            bottom[0].diff.zero_()  # indices get no gradient

    def allow_force_backward(self, bottom_index):
        return False


def learned_shape(layer, bottom, axis, num_axes, what):
    """A learned scale's or bias's shape: bottom's axes [axis, axis + num_axes), -1 to the end."""
    axis = canonical_axis(layer, bottom, axis)
    if num_axes < -1:
        layer.fail(f"{what} num_axes must be non-negative, or -1 for all axes from axis on; "
                   f"got {num_axes}")
    end = bottom.num_axes if num_axes == -1 else axis + num_axes
    if end > bottom.num_axes:
        layer.fail(f"{what} of {num_axes} axes from axis {axis} extends past the bottom's shape "
                   f"{bottom.shape}")
    return bottom.shape[axis:end]


def broadcast_dims(layer, bottom, operand, axis, what):
    """(outer, dim, inner) such that operand of `dim` values applies to bottom viewed that way."""
    n = operand.num_axes
    # A scalar applies the same way from any axis; 0 keeps outer at 1.
    axis = 0 if n == 0 else canonical_axis(layer, bottom, axis)
    if bottom.shape[axis:axis + n] != operand.shape:
        layer.fail(f"{what} of shape {operand.shape} does not match bottom 0 of shape "
                   f"{bottom.shape} from axis {axis}")
    return bottom.count(0, axis), operand.count(), bottom.count(axis + n)


def _reduce_into(target, dy, dims, accumulate):
    """target (dim values) = or += dy viewed (outer, dim, inner) summed over outer and inner."""
    g = dy.view(dims).sum((0, 2))
    target.view(-1).add_(g) if accumulate else target.view(-1).copy_(g)


@register_layer
class ScaleLayer(Layer):
    """y = x * s (+ b), s and b broadcast over x's axes [axis, axis + s.num_axes);
    s is bottom 1 or a learned blob (filler default constant 1), b learned (bias_term)."""

    type = "Scale"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1
    fused_source = None

    def setup(self, bottom, top):
        p = self.param.scale_param
        if len(bottom) == 1 and not self.blobs:
            filler = p.filler if p.HasField("filler") else \
                caffe_pb2.FillerParameter(type="constant", value=1)
            self.blobs = [self.new_blob(learned_shape(self, bottom[0], p.axis, p.num_axes,
                                                      "scale"), filler)]
        self.has_bias = p.bias_term
        if p.bias_term and len(self.blobs) + len(bottom) < 3:
            # Caffe's inner Bias layer: axis as given, as many axes as the scale has.
            num_axes = bottom[1].num_axes if len(bottom) > 1 else p.num_axes
            self.blobs.append(self.new_blob(learned_shape(self, bottom[0], p.axis, num_axes,
                                                          "bias"), p.bias_filler))

    def reshape(self, bottom, top):
        axis = self.param.scale_param.axis
        self.scale = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.dims = broadcast_dims(self, bottom[0], self.scale, axis, "scale")
        if self.has_bias:
            self.bias_dims = broadcast_dims(self, bottom[0], self.blobs[-1], axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        dim = self.dims[1]
        x = bottom[0].data
        # In place, backward still needs x for the scale's gradient (Caffe's temp_), unless
        # the Net will run no backward or the scale learns nothing.
        keep = self.need_backward and (len(bottom) > 1 or self.param_propagate_down[0])
        self.x = x if top[0] is not bottom[0] else x.clone() if keep else None
        self.fused_source = None
        y, s = top[0].data, self.scale.data.view(1, dim, 1)
        if self.has_bias and self.bias_dims == self.dims:   # y = b + x s in one pass
            torch.addcmul(self.blobs[-1].data.view(1, dim, 1), x.view(self.dims), s,
                          out=y.view(self.dims))
            return
        torch.mul(x.view(self.dims), s, out=y.view(self.dims))
        if self.has_bias:
            y.view(self.bias_dims).add_(self.blobs[-1].data.view(1, -1, 1))

    def backward(self, top, propagate_down, bottom):
        dy, dim = top[0].diff, self.dims[1]
        learned = len(bottom) == 1
        want_bias = self.has_bias and self.param_propagate_down[-1]
        want_scale = (learned and self.param_propagate_down[0]) or \
            (not learned and propagate_down[1])
        if want_scale and self.x is None and self.fused_source is not None:
            # The Net ran this layer inside the BatchNorm before it: x is that layer's output.
            bn, bn_bottom = self.fused_source
            self.x = bn.normalized(bn_bottom)
        if want_scale and self.x is None:
            raise CaffeError(f"layer '{self.name}' (Scale): in-place forward kept no copy of "
                             f"its input (the net needed no backward), so it cannot backward")
        if want_scale and want_bias and self.bias_dims == self.dims:
            # Both per-channel sums, of dy * x and of dy, in one pass: the batch-norm backward
            # kernel with mean 0 and 1 / std 1.
            zero = torch.zeros(dim, dtype=dy.dtype, device=dy.device)
            _, g_scale, g_bias = torch.ops.aten.native_batch_norm_backward(
                dy.view(self.dims), self.x.view(self.dims), None, None, None, zero, zero + 1,
                True, 0.0, [False, True, True])
            self.blobs[-1].diff.view(-1).add_(g_bias)
            target = self.scale.diff.view(-1)
            target.add_(g_scale) if learned else target.copy_(g_scale)
            want_scale = want_bias = False
        if want_bias:
            _reduce_into(self.blobs[-1].diff, dy, self.bias_dims, accumulate=True)
        if want_scale:
            _reduce_into(self.scale.diff, dy * self.x.view(dy.shape), self.dims, learned)
        if propagate_down[0]:
            torch.mul(dy.view(self.dims), self.scale.data.view(1, dim, 1),
                      out=bottom[0].diff.view(self.dims))


@register_layer
class BiasLayer(Layer):
    """y = x + b, b broadcast over x's axes [axis, axis + b.num_axes); b is bottom 1 or learned."""

    type = "Bias"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1 and not self.blobs:
            self.blobs = [self.new_blob(learned_shape(self, bottom[0], p.axis, p.num_axes,
                                                      "bias"), p.filler)]

    def reshape(self, bottom, top):
        self.bias = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.dims = broadcast_dims(self, bottom[0], self.bias, self.param.bias_param.axis, "bias")
        if top[0] is not bottom[0]:
            top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        torch.add(bottom[0].data.view(self.dims), self.bias.data.view(1, -1, 1),
                  out=top[0].data.view(self.dims))

    def backward(self, top, propagate_down, bottom):
        learned = len(bottom) == 1
        if (learned and self.param_propagate_down[0]) or (not learned and propagate_down[1]):
            _reduce_into(self.bias.diff, top[0].diff, self.dims, learned)
        if propagate_down[0] and top[0] is not bottom[0]:
            bottom[0].diff.copy_(top[0].diff)
