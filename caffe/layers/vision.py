"""Vision layers: convolution, deconvolution, im2col and spatial pyramid pooling.

Pooling lives in pooling.py and LRN in normalization.py (imported here, so this family
registers them too).
Convolutions with 1 to 3 spatial axes run on torch's convolution kernels; other ranks
(0 or more than 3 spatial axes, which Caffe also accepts) fall back to Caffe's own
im2col + matrix product formulation.
"""
import itertools
import math

import torch
import torch.nn.functional as F

from ..layer import Layer, register_layer
from ..proto import caffe_pb2
from .normalization import LRNLayer  # noqa: F401 (registers it)
from .pooling import STOCHASTIC, Pool2d, PoolingLayer, check_4d, spp_levels  # noqa: F401

__all__ = ["ConvolutionLayer", "DeconvolutionLayer", "Im2colLayer", "LRNLayer", "SPPLayer",
           "PoolingLayer", "im2col", "col2im"]


# -- geometry -----------------------------------------------------------------------------
def conv_geometry(layer, p, num_spatial):
    """(kernel, stride, pad, dilation), one entry per spatial axis, by Caffe's rules: each
    repeated field given once or once per axis, or (2-D only) as the _h/_w pair."""
    def axes(name, values, pair, default):
        if pair and (p.HasField(pair + "_h") or p.HasField(pair + "_w")):
            if num_spatial != 2:
                layer.fail(f"{pair}_h & {pair}_w can only be used for 2-D convolution")
            if len(values):
                layer.fail(f"give either {name} or {pair}_h/{pair}_w, not both")
            got = (getattr(p, pair + "_h"), getattr(p, pair + "_w"))
        else:
            allowed = (1, num_spatial) if default is None else (0, 1, num_spatial)
            if len(values) not in allowed:
                layer.fail(f"{name} must be given once or once per spatial axis "
                           f"({len(values)} values for {num_spatial} spatial axes)")
            got = tuple(values[i if len(values) > 1 else 0] if len(values) else default
                        for i in range(num_spatial))
        if default != 0 and any(v <= 0 for v in got):
            layer.fail(f"{name} must be positive, got {got}")
        return got
    return (axes("kernel_size", p.kernel_size, "kernel", None),
            axes("stride", p.stride, "stride", 1),
            axes("pad", p.pad, "pad", 0),
            axes("dilation", p.dilation, "", 1))


def conv_output(layer, spatial, geometry, transposed=False):
    """Caffe's top spatial shape: (n + 2 pad - extent) / stride + 1 for convolution,
    stride (n - 1) + extent - 2 pad for deconvolution; extent = dilation (kernel - 1) + 1."""
    kernel, _, _, dilation = geometry
    axes = [(n, d * (k - 1) + 1, s, p) for n, k, s, p, d in zip(spatial, *geometry)]
    if transposed:
        out = tuple(s * (n - 1) + e - 2 * p for n, e, s, p in axes)
    elif any(n + 2 * p < e for n, e, s, p in axes):
        # Caffe would read past its padding here; torch refuses.
        layer.fail(f"kernel {kernel} (dilation {dilation}) exceeds the padded input {spatial}")
    else:
        out = tuple((n + 2 * p - e) // s + 1 for n, e, s, p in axes)
    if min(out, default=1) < 1:
        layer.fail(f"output size {out} is not positive for input {spatial}")
    return out


def _windows(kernel, stride, dilation, out):
    """For each kernel offset, the slices of the padded input it meets (im2col's rows)."""
    for offset in itertools.product(*(range(k) for k in kernel)):
        yield (Ellipsis,) + tuple(slice(o * d, o * d + (n - 1) * s + 1, s)
                                  for o, d, s, n in zip(offset, dilation, stride, out))


def im2col(x, kernel, stride, pad, dilation, out):
    """(N, C, *S) -> Caffe's column buffer (N, C * prod(kernel), *out)."""
    if len(kernel) == 2:
        return F.unfold(x, kernel, dilation, pad, stride).view(x.shape[0], -1, *out)
    xp = F.pad(x, [q for p in reversed(pad) for q in (p, p)])
    cols = torch.stack([xp[w] for w in _windows(kernel, stride, dilation, out)], 2)
    return cols.view(x.shape[0], -1, *out)


def col2im(col, shape, kernel, stride, pad, dilation, out):
    """Transpose of im2col: sum each column entry back onto its input, (N, C, *S)."""
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    if len(kernel) == 2:
        return F.fold(col.reshape(n, col.shape[1], -1), spatial, kernel, dilation, pad, stride)
    xp = col.new_zeros((n, c) + tuple(s + 2 * p for s, p in zip(spatial, pad)))
    col = col.reshape(n, c, -1, *out)
    for j, w in enumerate(_windows(kernel, stride, dilation, out)):
        xp[w] += col[:, :, j]
    return xp[(Ellipsis,) + tuple(slice(p, p + s) for p, s in zip(pad, spatial))]


# -- convolution ----------------------------------------------------------------------------
# Bytes of input and output per call of a grouped convolution's kernel (see batch_chunk):
# about a core's share of L2 plus L3 on the machines measured.
GROUPED_CHUNK_BYTES = 4 << 20

class _ConvolutionBase(Layer):
    """Shared by Convolution and Deconvolution; every bottom/top pair uses the same weights."""

    min_bottom_blobs = 1
    min_top_blobs = 1
    equal_num_bottom_top_blobs = True
    transposed = False

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.axis = bottom[0].canonical_axis_index(p.axis)
        num_spatial = bottom[0].num_axes - self.axis - 1
        self.geometry = conv_geometry(self, p, num_spatial)
        self.channels, self.group, self.num_output = bottom[0].shape[self.axis], p.group, \
            p.num_output
        if p.num_output <= 0:
            self.fail("num_output must be positive")
        if p.group <= 0 or self.channels % p.group or p.num_output % p.group:
            self.fail(f"group {p.group} must divide both the input channels ({self.channels}) "
                      f"and num_output ({p.num_output})")
        out_ch, in_ch = (self.channels, p.num_output) if self.transposed else \
            (p.num_output, self.channels)
        shapes = [(out_ch, in_ch // p.group) + self.geometry[0]]
        fillers = [p.weight_filler]
        if p.bias_term:
            shapes.append((p.num_output,))
            fillers.append(p.bias_filler)
        self.bias_term = p.bias_term
        if not self.blobs:
            self.blobs = [self.new_blob(s, f) for s, f in zip(shapes, fillers)]
        elif len(self.blobs) != len(shapes):
            self.fail(f"expected {len(shapes)} learned blobs, got {len(self.blobs)}")
        for i, (blob, shape) in enumerate(zip(self.blobs, shapes)):
            if blob.shape == (1,) * (4 - len(shape)) + shape:
                blob.reshape(shape)   # a legacy 4-D blob, e.g. a V1 bias (1, 1, 1, n)
            if blob.shape != shape:
                self.fail(f"learned blob {i} has shape {blob.shape}, expected {shape}")
        # torch's kernels take 1 to 3 spatial axes; 0 axes is a 1-D convolution over length 1.
        self.native = 0 <= num_spatial <= 3
        self.torch_geometry = self.geometry if num_spatial else ((1,), (1,), (0,), (1,))
        # Caffe's 1x1 case: no im2col, one matrix product per image and group, written
        # straight into the top (torch's convolution returns a new tensor that would have to
        # be copied). Grouped 1x1 convolutions (ShuffleNet's) take it too: oneDNN would
        # reorder the NCHW input into its blocked layout and back on every call, 2.4x the
        # time of the batched product at batch 16.
        kernel, stride, pad, _ = self.geometry
        self.pointwise = (num_spatial >= 1 and not self.transposed
                          and set(kernel) == {1} and set(stride) == {1} and not any(pad))

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != self.axis + 1 + len(self.geometry[0]):
            self.fail(f"bottom must keep {self.axis + 1 + len(self.geometry[0])} axes, "
                      f"got {b.shape}")
        if b.shape[self.axis] != self.channels:
            self.fail(f"bottom has {b.shape[self.axis]} channels, the weights expect "
                      f"{self.channels}")
        if any(other.shape != b.shape for other in bottom[1:]):
            self.fail("all bottoms must have the same shape")
        spatial = b.shape[self.axis + 1:]
        out = conv_output(self, spatial, self.geometry, self.transposed)
        for t in top:
            t.reshape(b.shape[:self.axis] + (self.num_output,) + out)
        num = b.count(0, self.axis)
        one = () if spatial else (1,)
        self.in_view = (num, self.channels) + spatial + one
        self.out_view = (num, self.num_output) + out + one
        self.spatial, self.out = spatial, out

    def weight(self):
        w = self.blobs[0].data
        return w if self.geometry[0] else w.view(w.shape + (1,))

    def _grouped(self, a, channels):
        """(N, C, *S) data -> (N, G, C / G, prod(S)): the pointwise path's matrices."""
        return a.view(self.in_view[0], self.group, channels // self.group, -1)

    def _pointwise_weight(self):
        return self.blobs[0].data.view(self.group, self.num_output // self.group,
                                       self.channels // self.group)

    def batch_chunk(self):
        """Images per call of the convolution kernel. oneDNN runs grouped (depthwise)
        convolutions on a blocked copy of the input and output that it makes on each call;
        for a whole batch of large feature maps those copies leave the cache (and glibc
        maps and unmaps them, page-faulting every call): at batch 16 a MobileNet depthwise
        layer took 6-8x its time per image. Calls of at most GROUPED_CHUNK_BYTES keep them
        in cache; dense convolutions are bound by their arithmetic and run whole."""
        num = self.in_view[0]
        if self.group == 1 or self.transposed or num == 1:
            return num
        per_image = (math.prod(self.in_view[1:]) + math.prod(self.out_view[1:])) * \
            self.blobs[0].data.element_size()
        return max(1, min(num, GROUPED_CHUNK_BYTES // per_image))

    def forward(self, bottom, top):
        w, bias = self.weight(), self.blobs[1].data if self.bias_term else None
        if self.pointwise:
            w = self._pointwise_weight()
            for b, t in zip(bottom, top):
                y = self._grouped(t.data, self.num_output)
                torch.matmul(w, self._grouped(b.data, self.channels), out=y)
                if bias is not None:
                    y.view(self.out_view[0], self.num_output, -1).add_(bias.view(1, -1, 1))
            return
        stride, pad, dilation = self.torch_geometry[1:]
        chunk = self.batch_chunk() if self.native else None
        for b, t in zip(bottom, top):
            x, y = b.data.view(self.in_view), t.data.view(self.out_view)
            if self.native:
                for i in range(0, x.shape[0], chunk):
                    y[i:i + chunk] = torch.ops.aten.convolution(
                        x[i:i + chunk], w, bias, stride, pad, dilation, self.transposed,
                        [0] * len(pad), self.group)
            else:
                y[...] = self._gemm_forward(x, w)
                if bias is not None:
                    y += bias.view((-1,) + (1,) * len(self.out))

    def backward(self, top, propagate_down, bottom):
        w, ppd = self.weight(), self.param_propagate_down
        stride, pad, dilation = self.torch_geometry[1:]
        for i, (b, t) in enumerate(zip(bottom, top)):
            mask = [bool(propagate_down[i]), bool(ppd[0]), self.bias_term and bool(ppd[1])]
            if not any(mask):
                continue
            if self.pointwise:
                self._pointwise_backward(b, t, mask)
                continue
            x, dy = b.data.view(self.in_view), t.diff.view(self.out_view)
            if self.native:
                dx, dw, db = torch.ops.aten.convolution_backward(
                    dy, x, w, [self.num_output] if mask[2] else None, stride, pad, dilation,
                    self.transposed, [0] * len(pad), self.group, mask)
            else:
                dx, dw = self._gemm_backward(x, w, dy, mask)
                db = dy.sum([0] + list(range(2, dy.dim()))) if mask[2] else None
            if mask[0]:
                b.diff.view(self.in_view)[...] = dx
            if mask[1]:
                self.blobs[0].diff.view(w.shape).add_(dw)
            if mask[2]:
                self.blobs[1].diff.add_(db)

    def _pointwise_backward(self, b, t, mask):
        num = self.in_view[0]
        w = self._pointwise_weight()
        dy, x = self._grouped(t.diff, self.num_output), self._grouped(b.data, self.channels)
        if mask[1]:   # dW_g += sum over images of dy_g x_g^T
            dw = self.blobs[0].diff.view(w.shape)
            if num <= 32:
                for n in range(num):
                    dw.baddbmm_(dy[n], x[n].transpose(1, 2))
            else:
                dw += torch.matmul(dy, x.transpose(2, 3)).sum(0)
        if mask[2]:
            self.blobs[1].diff.add_(dy.sum((0, 3)).view(-1))
        if mask[0]:
            torch.matmul(w.transpose(1, 2), dy, out=self._grouped(b.diff, self.channels))

    # Caffe's formulation: the im2col side is the bottom (convolution) or the top
    # (deconvolution); weights are (G, conv_out / G, conv_in / G * prod(kernel)).
    def _cols(self, x):
        out = self.spatial if self.transposed else self.out
        col = im2col(x, *self.geometry, out)
        return col.view(col.shape[0], self.group, col.shape[1] // self.group, -1)

    def _uncols(self, col, channels):
        shape, out = (self.out, self.spatial) if self.transposed else (self.spatial, self.out)
        return col2im(col.reshape(col.shape[0], -1, *out), (col.shape[0], channels) + shape,
                      *self.geometry, out)

    def _gemm(self, a):   # (N, C, *S) -> (N, G, C / G, prod(S))
        return a.reshape(a.shape[0], self.group, a.shape[1] // self.group, -1)

    def _gemm_forward(self, x, w):
        wg = w.reshape(self.group, w.shape[0] // self.group, -1)
        if self.transposed:
            return self._uncols(wg.transpose(1, 2) @ self._gemm(x), self.num_output)
        return (wg @ self._cols(x)).reshape(self.out_view)

    def _gemm_backward(self, x, w, dy, mask):
        wg = w.reshape(self.group, w.shape[0] // self.group, -1)
        inp, outp = (dy, x) if self.transposed else (x, dy)
        col, outp = self._cols(inp), self._gemm(outp)
        dw = torch.einsum("ngol,ngkl->gok", outp, col).reshape(w.shape) if mask[1] else None
        if not mask[0]:
            return None, dw
        if self.transposed:
            return (wg @ col).reshape(x.shape), dw
        return self._uncols(wg.transpose(1, 2) @ outp, self.channels), dw


@register_layer
class ConvolutionLayer(_ConvolutionBase):
    """y = W * x + b (cross-correlation, grouped); W is (num_output, C / group, *kernel)."""

    type = "Convolution"


@register_layer
class DeconvolutionLayer(_ConvolutionBase):
    """y = W^T * x + b, the transpose of convolution; W is (C, num_output / group, *kernel)."""

    type = "Deconvolution"
    transposed = True


@register_layer
class Im2colLayer(Layer):
    """top = Caffe's column buffer (N, C * prod(kernel), *out), rows ordered (c, offset)."""

    type = "Im2col"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.axis = bottom[0].canonical_axis_index(p.axis)
        num_spatial = bottom[0].num_axes - self.axis - 1
        if num_spatial < 1:
            self.fail(f"needs at least one spatial axis after axis {self.axis}")
        self.geometry = conv_geometry(self, p, num_spatial)

    def reshape(self, bottom, top):
        kernel, b = self.geometry[0], bottom[0]
        self.spatial = b.shape[self.axis + 1:]
        if len(self.spatial) != len(kernel):
            self.fail(f"bottom must keep {self.axis + 1 + len(kernel)} axes, got {b.shape}")
        self.out = conv_output(self, self.spatial, self.geometry)
        self.channels, self.num = b.shape[self.axis], b.count(0, self.axis)
        top[0].reshape(b.shape[:self.axis] + (self.channels * math.prod(kernel),) + self.out)

    def forward(self, bottom, top):
        x = bottom[0].data.view((self.num, self.channels) + self.spatial)
        top[0].data.view((self.num, -1) + self.out)[...] = im2col(x, *self.geometry, self.out)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            shape = (self.num, self.channels) + self.spatial
            bottom[0].diff.view(shape)[...] = col2im(
                top[0].diff.view((self.num, -1) + self.out), shape, *self.geometry, self.out)


# -- spatial pyramid pooling ------------------------------------------------------------------
@register_layer
class SPPLayer(Layer):
    """y = concat over levels l of flatten(pool_l(x)), pool_l tiling x into 2^l x 2^l bins
    (a single level keeps its (N, C, 1, 1) shape, as Caffe)."""

    type = "SPP"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        if p.pyramid_height < 1:
            self.fail("pyramid_height must be at least 1")
        self.levels, self.size = [], None

    def make_levels(self, h, w):
        p, levels = self.param.spp_param, []
        for level, (kernel, pad) in enumerate(spp_levels(p.pyramid_height, h, w)):
            if pad[0] >= kernel[0] or pad[1] >= kernel[1] or (any(pad) and p.pool == STOCHASTIC):
                self.fail(f"level {level} needs pad {pad} with kernel {kernel}: the input "
                          f"{h}x{w} is too small for {p.pyramid_height} levels")
            levels.append(Pool2d(p.pool, kernel, kernel, pad, (h, w)))
        return levels

    def reshape(self, bottom, top):
        check_4d(self, bottom[0])
        n, c, h, w = bottom[0].shape
        if h < 1 or w < 1:
            self.fail(f"input {h}x{w} is empty")
        if self.size != (h, w):
            self.levels, self.size = self.make_levels(h, w), (h, w)
        if len(self.levels) == 1:
            top[0].reshape((n, c) + self.levels[0].out)
        else:
            top[0].reshape(n, sum(c * math.prod(pool.out) for pool in self.levels))

    def forward(self, bottom, top):
        # Caffe's inner pooling layers are built with a default (TRAIN) phase, so
        # STOCHASTIC always samples.
        x, want, n = bottom[0].data, self.phase == caffe_pb2.TRAIN, bottom[0].shape[0]
        start = 0
        for pool in self.levels:
            y = pool.forward(x, want, True).reshape(n, -1)
            top[0].data.view(n, -1)[:, start:start + y.shape[1]] = y
            start += y.shape[1]

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x, dx, n = bottom[0].data, bottom[0].diff, bottom[0].shape[0]
        dy_all, start, part = top[0].diff.view(n, -1), 0, None
        for i, pool in enumerate(self.levels):
            shape = pool.out_shape(x)
            dy = dy_all[:, start:start + math.prod(shape[1:])].reshape(shape)
            start += math.prod(shape[1:])
            if i == 0:
                pool.backward(dy, x, dx)
            else:
                part = torch.empty_like(dx) if part is None else part
                pool.backward(dy, x, part)
                dx += part
