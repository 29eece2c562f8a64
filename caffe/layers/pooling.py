"""Pooling: Caffe's 2-D MAX / AVE / STOCHASTIC pooling, and the pooling step SPP reuses.

Caffe's window geometry differs from torch's in three places, all reproduced here:
the output length is ceil((H + 2 pad - k) / stride) + 1 and a last window starting in the
far padding is dropped only when some pad is non-zero (torch drops it always); pad may be
anything below the kernel (torch: at most half); AVE divides by the window clipped to the
padded input. Where torch draws the same windows it runs directly, otherwise the input is
padded explicitly so that the windows tile it exactly.
STOCHASTIC pooling follows Caffe's GPU kernels (its CPU version is not implemented).
"""
from collections import namedtuple

import numpy as np
import torch
import torch.nn.functional as F

from ..layer import Layer, register_layer
from ..proto import caffe_pb2

MAX, AVE, STOCHASTIC = (caffe_pb2.PoolingParameter.MAX, caffe_pb2.PoolingParameter.AVE,
                        caffe_pb2.PoolingParameter.STOCHASTIC)
FLT_MAX = 3.4028234663852886e38   # Caffe's float limits, kept in float64 nets too
FLT_MIN = 1.1754943508222875e-38


def pooled_length(size, kernel, stride, pad, ceil=True, clip=True, extra=0):
    """Caffe's number of windows along one axis, plus `extra` (darknet2caffe's); `clip` (some
    pad non-zero) drops a last window that would start at or beyond size + pad."""
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1 + extra
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


Windows = namedtuple("Windows", "out before after empty")


def pool_windows(kernel, stride, pad, size, ceil=True, extra=0):
    """Caffe's pooling windows over `size`: the output size, the padding before and after
    each axis that makes the windows tile the padded input exactly (after < 0: rows the
    windows never reach), and whether some window lies wholly outside the input. The
    Pooling layer and the ONNX exporter share it; `extra` is pooled_length's."""
    clip = any(pad)
    out = tuple(pooled_length(n, k, s, p, ceil, clip, extra)
                for n, k, s, p in zip(size, kernel, stride, pad))
    after = tuple((o - 1) * s + k - p - n for o, n, k, s, p in zip(out, size, kernel, stride, pad))
    empty = any((o - 1) * s - p >= n for o, n, s, p in zip(out, size, stride, pad))
    return Windows(out, tuple(pad), after, empty)


def ave_divisor(out, size, kernel, stride, pad):
    """Caffe's AVE divisor for each output: the window clipped to the padded input [-pad,
    size + pad). Pool2d and the ONNX exporter share it."""
    sizes = []
    for o, n, k, s, p in zip(out, size, kernel, stride, pad):
        start = np.arange(o) * s - p
        sizes.append(np.minimum(start + k, n + p) - start)
    return np.outer(sizes[0], sizes[1]).astype(np.float64)


def spp_levels(pyramid_height, h, w):
    """(kernel, pad) of each SPP level: level l tiles the input into 2^l x 2^l bins. The SPP
    layer and both exporters share it."""
    levels = []
    for level in range(pyramid_height):
        bins = 2 ** level
        kernel = (-(-h // bins), -(-w // bins))
        pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
        levels.append((kernel, pad))
    return levels


def channels_last(x):
    """x in channels-last memory order: torch's CPU max pooling kernel vectorizes across
    channels there (3-10x faster than its NCHW loop, even counting the copy), and returns the
    same values and the same plane indices, which the NCHW backward accepts."""
    if x.device.type != "cpu" or x.shape[1] == 1:
        return x
    return x.contiguous(memory_format=torch.channels_last)


class Pool2d:
    """One pooling step over the last two axes of (N, C, H, W) with Caffe's geometry.

    `index` keeps, after a MAX or sampled STOCHASTIC forward, the chosen input of each window
    as a flat index into its H x W plane (-1 where a window holds no input), as Caffe's mask.
    """

    def __init__(self, method, kernel, stride, pad, size, ceil=True, extra=0):
        self.method, self.kernel, self.stride, self.pad, self.size = \
            method, tuple(kernel), tuple(stride), tuple(pad), tuple(size)
        axes = list(zip(size, kernel, stride, pad))
        win = pool_windows(kernel, stride, pad, size, ceil, extra)
        self.out = win.out
        torch_out = tuple(pooled_length(n, k, s, p, ceil, ceil) for n, k, s, p in axes)
        self.ceil = ceil
        self.native = method != STOCHASTIC and torch_out == self.out and \
            all(2 * p <= k for _, k, _, p in axes)
        # Rows / columns added after the input so the windows tile it exactly (< 0 crops).
        self.padding = (pad[1], win.after[1], pad[0], win.after[0])
        # Without padding Caffe keeps a last window lying wholly beyond the input.
        self.empty = win.empty
        self.index, self.sampled, self.divisor = None, False, None

    # -- helpers -------------------------------------------------------------------
    def _sum(self, xp):
        return F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)

    def _sum_backward(self, g, like):
        """Transpose of _sum on the explicitly padded input, cropped back to `like`'s shape."""
        (h, w), (left, right, top, bottom) = self.size, self.padding
        shape = like.shape[:2] + (h + top + bottom, w + left + right)
        gp = torch.ops.aten.avg_pool2d_backward(g, like.new_empty(shape), self.kernel,
                                                self.stride, (0, 0), False, True, 1)
        return F.pad(gp, [-q for q in self.padding])

    def _divisor(self, like):
        """Caffe's AVE divisor (ave_divisor), made once per dtype and device."""
        key = (like.dtype, like.device)
        if self.divisor is None or self.divisor[0] != key:
            value = ave_divisor(self.out, self.size, self.kernel, self.stride, self.pad)
            self.divisor = key, torch.from_numpy(value).to(like.dtype).to(like.device)
        return self.divisor[1]

    def _plane_index(self, rows, cols):
        """Flat plane index of (row, col) in padded coordinates, -1 outside the input."""
        rows, cols = rows - self.padding[2], cols - self.padding[0]
        index = rows * self.size[1] + cols
        if self.empty:
            inside = (rows < self.size[0]) & (cols < self.size[1])
            index = torch.where(inside, index, -1)
        return index

    def _scatter(self, dy, dx):
        """dx = sum of dy onto each window's chosen input (Caffe's mask backward)."""
        index, nc = self.index, dx.shape[0] * dx.shape[1]
        if self.empty:
            dy, index = torch.where(index >= 0, dy, 0), index.clamp(min=0)
        dx.zero_()
        dx.view(nc, -1).scatter_add_(1, index.reshape(nc, -1), dy.reshape(nc, -1))

    # -- forward / backward ----------------------------------------------------------------
    def forward(self, x, want_index=False, train=True):
        """Pooled x; MAX keeps indices when `want_index`, STOCHASTIC samples when `train`."""
        if self.method == MAX:
            return self._max(x, want_index)
        if self.method == AVE:
            if self.native:
                return F.avg_pool2d(x, self.kernel, self.stride, self.pad, self.ceil, True)
            return self._sum(F.pad(x, self.padding)) / self._divisor(x)
        return self._stochastic(x, train)

    def _max(self, x, want_index):
        self.index = None
        if self.native:
            x = channels_last(x)
            if not want_index:
                return F.max_pool2d(x, self.kernel, self.stride, self.pad, ceil_mode=self.ceil)
            y, self.index = F.max_pool2d(x, self.kernel, self.stride, self.pad,
                                         ceil_mode=self.ceil, return_indices=True)
            return y
        xp = channels_last(F.pad(x, self.padding, value=-torch.inf))
        y = F.max_pool2d(xp, self.kernel, self.stride, return_indices=want_index)
        if want_index:
            y, index = y
            self.index = self._plane_index(index // xp.shape[3], index % xp.shape[3])
        if self.empty:   # Caffe starts each window at -FLT_MAX, with mask -1
            y = y.clamp(min=-FLT_MAX)
            if want_index:
                self.index = torch.where(y > -FLT_MAX, self.index, -1)
        return y

    def _stochastic(self, x, train):
        xp = F.pad(x, self.padding)
        self.sampled = train
        if not train:   # activation-weighted mean; Caffe seeds the sum with FLT_MIN
            return self._sum(xp * xp) / (self._sum(xp) + FLT_MIN)
        (kh, kw), (sh, sw) = self.kernel, self.stride
        win = xp.unfold(2, kh, sh).unfold(3, kw, sw).reshape(*self.out_shape(x), kh * kw)
        cum = win.cumsum(-1)
        # Caffe's uniform draw lies in (0, 1]; the first cumulative sum reaching u * total wins.
        u = 1 - torch.rand(cum.shape[:-1], dtype=x.dtype, device=x.device)
        pick = (cum >= (u * cum[..., -1])[..., None]).to(torch.uint8).argmax(-1, keepdim=True)
        y = win.gather(-1, pick).squeeze(-1)
        pick = pick.squeeze(-1)
        rows = torch.arange(self.out[0], device=x.device)[:, None] * sh + pick // kw
        cols = torch.arange(self.out[1], device=x.device) * sw + pick % kw
        self.index = self._plane_index(rows, cols)   # STOCHASTIC has no pad
        return torch.where(self.index >= 0, y, 0) if self.empty else y

    def out_shape(self, x):
        return x.shape[:2] + self.out

    def backward(self, dy, x, dx):
        """Write dL/dx into dx (x's shape) from dy, after forward on the same x."""
        if self.method == MAX:
            if self.index is None:   # the forward kept no indices (TEST phase)
                self._max(x, True)
            if self.native:
                torch.ops.aten.max_pool2d_with_indices_backward.grad_input(
                    dy, x, self.kernel, self.stride, self.pad, (1, 1), self.ceil, self.index,
                    grad_input=dx)
            else:
                self._scatter(dy, dx)
        elif self.method == AVE:
            if self.native:
                torch.ops.aten.avg_pool2d_backward.grad_input(
                    dy, x, self.kernel, self.stride, self.pad, self.ceil, True, None,
                    grad_input=dx)
            else:
                dx.copy_(self._sum_backward(dy / self._divisor(x), x))
        elif self.sampled:
            self._scatter(dy, dx)
        else:
            # Caffe's backward would reuse stale samples here; this is the exact gradient
            # of the TEST output sum(x^2) / sum(x).
            xp = F.pad(x, self.padding)
            s1 = self._sum(xp) + FLT_MIN
            g = dy / s1
            y = self._sum(xp * xp) / s1
            dx.copy_(2 * x * self._sum_backward(g, x) - self._sum_backward(g * y, x))


def pooling_geometry(layer, p):
    """(kernel, stride, pad) pairs from a PoolingParameter, checked as Caffe does; kernel is
    None for global pooling (it follows the bottom)."""
    if p.global_pooling:
        if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
            layer.fail("with global_pooling no kernel size may be given")
        kernel = None
    else:
        if p.HasField("kernel_size") and (p.HasField("kernel_h") or p.HasField("kernel_w")):
            layer.fail("kernel size is kernel_size OR kernel_h and kernel_w, not both")
        if not p.HasField("kernel_size") and not (p.HasField("kernel_h") and
                                                  p.HasField("kernel_w")):
            layer.fail("give kernel_size, or both kernel_h and kernel_w")
        kernel = (p.kernel_size,) * 2 if p.HasField("kernel_size") else (p.kernel_h, p.kernel_w)
        if min(kernel) <= 0:
            layer.fail(f"kernel size must be positive, got {kernel}")
    pairs = []
    for name in ("pad", "stride"):
        has_h, has_w = p.HasField(name + "_h"), p.HasField(name + "_w")
        if (has_h or has_w) and (p.HasField(name) or not (has_h and has_w)):
            layer.fail(f"{name} is {name} OR {name}_h and {name}_w")
        pairs.append((getattr(p, name + "_h"), getattr(p, name + "_w")) if has_h
                     else (getattr(p, name),) * 2)
    pad, stride = pairs
    if min(stride) <= 0:
        layer.fail(f"stride must be positive, got {stride}")
    if p.global_pooling and (any(pad) or stride != (1, 1)):
        layer.fail("with global_pooling only pad = 0 and stride = 1 are allowed")
    if any(pad):
        if p.pool not in (MAX, AVE):
            layer.fail("padding is implemented only for MAX and AVE pooling")
        if kernel and (pad[0] >= kernel[0] or pad[1] >= kernel[1]):
            layer.fail(f"pad {pad} must be smaller than the kernel {kernel}")
    return kernel, stride, pad


def check_4d(layer, blob):
    if blob.num_axes != 4:
        layer.fail(f"input must have 4 axes (num, channels, height, width), got {blob.shape}")


@register_layer
class PoolingLayer(Layer):
    """y = max, mean (window clipped to the padded input) or sampled value of each window;
    MAX may give a second top: the argmax as a flat index into its H x W plane."""

    type = "Pooling"
    dialects = ("darknet2caffe",)
    exact_num_bottom_blobs = 1
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p, dialect = self.param.pooling_param, self.param.dialect
        if len(top) > 1 and p.pool != MAX:
            self.fail("only MAX pooling has a second (mask) top")
        self.kernel, self.stride, self.pad = pooling_geometry(self, p)
        self.pool = None
        floor = p.round_mode == caffe_pb2.PoolingParameter.FLOOR
        if p.HasField("ceil_mode") and p.HasField("round_mode") and p.ceil_mode == floor:
            self.fail(f"round_mode {caffe_pb2.PoolingParameter.RoundMode.Name(p.round_mode)} "
                      f"and ceil_mode {str(p.ceil_mode).lower()} disagree; give one of them")
        self.ceil = not floor and p.ceil_mode
        # darknet2caffe's pooling_layer.cpp: one more window on each axis when
        # kernel_h - stride_h is odd (caffe/net_dialects.py decides which nets use it).
        odd = self.kernel and (self.kernel[0] - self.stride[0]) % 2
        self.extra = 1 if dialect == "darknet2caffe" and odd else 0

    def reshape(self, bottom, top):
        check_4d(self, bottom[0])
        size = bottom[0].shape[2:]
        kernel = self.kernel or size
        if self.pool is None or self.pool.size != size or self.pool.kernel != kernel:
            pool = Pool2d(self.param.pooling_param.pool, kernel, self.stride, self.pad, size,
                          self.ceil, self.extra)
            if min(pool.out) < 1:
                self.fail(f"kernel {kernel} is larger than the padded input {size}")
            self.pool = pool
        for blob in top:
            blob.reshape(self.pool.out_shape(bottom[0]))

    def forward(self, bottom, top):
        # Indices are kept when a mask top or, in TRAIN, a backward will want them.
        want = len(top) > 1 or (self.phase == caffe_pb2.TRAIN and self.need_backward)
        top[0].data[...] = self.pool.forward(bottom[0].data, want, self.phase == caffe_pb2.TRAIN)
        if len(top) > 1:
            top[1].data[...] = self.pool.index

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            self.pool.backward(top[0].diff, bottom[0].data, bottom[0].diff)
