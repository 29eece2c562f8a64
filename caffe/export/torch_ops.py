"""The torch emitter's ops: nn.Modules and functions over torch.nn.functional that compute
one Caffe layer each, with Caffe's rules at the edges (ceil-rounded pooling windows, the
clipped average-pooling divisor, ArgMax ties, Crop offsets)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.pooling import pooled_length
from ..proto import caffe_pb2
from .shapes import (AVE, FLT_MAX, FLT_MIN, MAX, ave_divisor, broadcast_shape, pool_windows,
                     spp_levels)


class Op(nn.Module):
    """One layer's computation; `inputs` / `outputs` name the values it reads and writes."""

    inputs, outputs = (), ()

    def extra_repr(self):
        return f"{list(self.inputs)} -> {list(self.outputs)}"


class Lambda(Op):
    """A parameter-free function of the inputs (`kind` names it in the module's repr)."""

    def __init__(self, fn, kind=""):
        super().__init__()
        self.fn, self.kind = fn, kind

    def forward(self, *xs):
        return self.fn(*xs)

    def extra_repr(self):
        return f"{self.kind}: {super().extra_repr()}" if self.kind else super().extra_repr()


class Conv(Op):
    """Convolution / Deconvolution over the axes after `axis` (Caffe's N-D layout)."""

    FUNCS = {False: {1: F.conv1d, 2: F.conv2d, 3: F.conv3d},
             True: {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}}

    def __init__(self, weight, bias, geometry, group, axis, transposed, one_hot=False):
        super().__init__()
        kernel, self.stride, self.pad, self.dilation = geometry
        if not kernel:     # no spatial axis: a 1-D convolution over length 1
            weight = weight.unsqueeze(-1)
            self.stride, self.pad, self.dilation = (1,), (0,), (1,)
        if one_hot:
            self.register_buffer("weight", weight)
        else:
            self.weight = weight
        self.bias, self.group, self.axis, self.transposed = bias, group, axis, transposed
        self.no_spatial = not kernel
        self.fn = self.FUNCS[transposed][max(len(kernel), 1)]

    def forward(self, x):
        lead = x.shape[:self.axis]
        x = x.reshape((-1,) + x.shape[self.axis:])
        if self.no_spatial:
            x = x.unsqueeze(-1)
        if self.transposed:
            y = self.fn(x, self.weight, self.bias, self.stride, self.pad, 0, self.group,
                        self.dilation)
        else:
            y = self.fn(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                        self.group)
        if self.no_spatial:
            y = y.squeeze(-1)
        return y.reshape(lead + y.shape[1:])


def pool2d(x, method, kernel, stride, pad, ceil=True, want_index=False):
    """Caffe's pooling of x (N, C, H, W); with want_index also the MAX argmax plane index."""
    size = tuple(x.shape[2:])
    win = pool_windows(kernel, stride, pad, size, ceil)
    torch_out = tuple(pooled_length(n, k, s, p, ceil, ceil)
                      for n, k, s, p in zip(size, kernel, stride, pad))
    if method != MAX and method != AVE:
        native = False
    else:
        native = torch_out == win.out and all(2 * p <= k for k, p in zip(kernel, pad))
    if native and method == MAX:
        return F.max_pool2d(x, kernel, stride, pad, ceil_mode=ceil, return_indices=want_index)
    if native:
        return F.avg_pool2d(x, kernel, stride, pad, ceil, count_include_pad=True)
    # Pad explicitly so that the windows tile the input exactly (negative: crop).
    (top, left), (bottom, right) = win.before, win.after
    padding = (left, right, top, bottom)
    if method == MAX:
        xp = F.pad(x, padding, value=-math.inf)
        y = F.max_pool2d(xp, kernel, stride, return_indices=want_index)
        index = None
        if want_index:
            y, index = y
            row, col = index // xp.shape[3] - top, index % xp.shape[3] - left
            index = row * size[1] + col
        if win.empty:   # Caffe starts each window at -FLT_MAX (and its mask at -1)
            y = y.clamp(min=-FLT_MAX)
            if want_index:
                index = torch.where(y > -FLT_MAX, index, -1)
        return (y, index) if want_index else y
    xp = F.pad(x, padding)
    if method == AVE:
        divisor = ave_divisor(win.out, size, kernel, stride, pad)
        return F.avg_pool2d(xp, kernel, stride, divisor_override=1) / \
            torch.from_numpy(divisor).to(x.dtype).to(x.device)
    # STOCHASTIC at test time: the activation-weighted mean sum(x^2) / (sum(x) + FLT_MIN).
    return F.avg_pool2d(xp * xp, kernel, stride, divisor_override=1) / \
        (F.avg_pool2d(xp, kernel, stride, divisor_override=1) + FLT_MIN)


class Pool(Op):
    def __init__(self, method, kernel, stride, pad, ceil, mask):
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.mask = ceil, mask

    def forward(self, x):
        kernel = self.kernel or tuple(x.shape[2:])       # global pooling
        y = pool2d(x, self.method, kernel, self.stride, self.pad, self.ceil, self.mask)
        if self.mask:
            return y[0], y[1].to(x.dtype)
        return y


class SPP(Op):
    def __init__(self, method, height):
        super().__init__()
        self.method, self.height = method, height

    def forward(self, x):
        levels = spp_levels(self.height, x.shape[2], x.shape[3])
        ys = [pool2d(x, self.method, k, k, p) for k, p in levels]
        return ys[0] if len(ys) == 1 else torch.cat([y.flatten(1) for y in ys], 1)


class LRN(Op):
    def __init__(self, param):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = param.local_size, param.alpha, param.beta, \
            param.k
        self.across = param.norm_region == caffe_pb2.LRNParameter.ACROSS_CHANNELS

    def forward(self, x):
        if self.across:
            return F.local_response_norm(x, self.size, self.alpha, self.beta, self.k)
        mean = F.avg_pool2d(x * x, self.size, 1, (self.size - 1) // 2, count_include_pad=True)
        return x * (1 + self.alpha * mean).pow(-self.beta)


class Linear(Op):
    def __init__(self, weight, bias, axis):
        super().__init__()
        self.weight, self.bias, self.axis = weight, bias, axis

    def forward(self, x):
        lead = x.shape[:self.axis]
        y = F.linear(x.reshape(math.prod(lead), -1), self.weight, self.bias)
        return y.reshape(lead + (y.shape[1],))


class Embed(Op):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias = weight, bias

    def forward(self, x):
        y = F.embedding(x.long(), self.weight)
        return y if self.bias is None else y + self.bias


class Affine(Op):
    """Scale and Bias layers: y = x * s (+ b), operands lined up with x from `axis`."""

    def __init__(self, axis, scale=None, bias=None, scale_from_input=False,
                 bias_from_input=False):
        super().__init__()
        self.axis, self.scale, self.bias = axis, scale, bias
        self.scale_from_input, self.bias_from_input = scale_from_input, bias_from_input

    def line_up(self, x, operand):
        return operand.reshape(broadcast_shape(x.shape, operand.shape, self.axis))

    def forward(self, x, other=None):
        if self.scale_from_input or self.scale is not None:
            x = x * self.line_up(x, other if self.scale_from_input else self.scale)
        if self.bias_from_input or self.bias is not None:
            x = x + self.line_up(x, other if self.bias_from_input else self.bias)
        return x


class BatchNorm(Op):
    def __init__(self, mean, var, eps):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("var", var)
        self.eps = eps

    def forward(self, x):
        if x.dim() >= 2:
            return F.batch_norm(x, self.mean, self.var, None, None, False, 0.0, self.eps)
        return (x - self.mean) / torch.sqrt(self.var + self.eps)


class PReLU(Op):
    def __init__(self, slope, shared):
        super().__init__()
        self.slope, self.shared = slope, shared

    def forward(self, x):
        a = self.slope.reshape(()) if self.shared else \
            self.slope.reshape((-1,) + (1,) * (x.dim() - 2))
        return torch.clamp(x, min=0) + a * torch.clamp(x, max=0)


class Parameter(Op):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self):
        return self.value


def canonical_axis(axis, rank):
    return axis + rank if axis < 0 else axis


def caffe_reshape(x, dims, axis, num_axes):
    """Reshape by Caffe's rule: dims replace axes [axis, axis + num_axes); 0 copies a dim,
    -1 takes what is left."""
    n = x.dim()
    start = axis if axis >= 0 else n + axis + 1
    end = n if num_axes == -1 else start + num_axes
    shape = list(x.shape[:start]) + [x.shape[start + i] if d == 0 else d
                                     for i, d in enumerate(dims)] + list(x.shape[end:])
    return x.reshape(shape)


def slice_sizes(length, points, count):
    if points:
        bounds = [0] + list(points) + [length]
        return [b - a for a, b in zip(bounds, bounds[1:])]
    return [length // count] * count


def crop(x, ref, axis, offsets):
    start = canonical_axis(axis, x.dim())
    for i in range(start, x.dim()):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        x = x.narrow(i, offset, ref.shape[i])
    return x


def argmax(x, p):
    """Caffe's ArgMax: ties rank the larger index first."""
    if p.HasField("axis"):
        axis = canonical_axis(p.axis, x.dim())
        v = x.movedim(axis, -1)
    else:
        v = x.reshape(x.shape[0], -1)
    dim = v.shape[-1]
    values, order = torch.sort(v.flip(-1), dim=-1, descending=True, stable=True)
    values, index = values[..., :p.top_k], ((dim - 1) - order[..., :p.top_k]).to(x.dtype)
    if p.HasField("axis"):
        return (values if p.out_max_val else index).movedim(-1, axis)
    out = torch.stack([index, values], 1) if p.out_max_val else index.unsqueeze(1)
    return out.reshape((x.shape[0], out.shape[1], p.top_k) + (1,) * (x.dim() - 3))


def reduction(x, p):
    axis = canonical_axis(p.axis, x.dim())
    ops = caffe_pb2.ReductionParameter
    if p.operation == ops.ASUM:
        x = x.abs()
    elif p.operation == ops.SUMSQ:
        x = x * x
    dims = tuple(range(axis, x.dim()))
    y = x.sum(dims) if dims else x
    coeff = p.coeff
    if p.operation == ops.MEAN:
        coeff = coeff / max(math.prod(x.shape[axis:]), 1)
    return y * coeff if coeff != 1 else y


def mvn(x, p):
    legacy = list(x.shape[:2]) + [1] * (2 - min(x.dim(), 2))
    rows = legacy[0] if p.across_channels else legacy[0] * legacy[1]
    v = x.reshape(rows, -1)
    y = v - v.mean(1, keepdim=True)
    if p.normalize_variance:
        y = y / (torch.sqrt((y * y).mean(1, keepdim=True)) + p.eps)
    return y.reshape(x.shape)


def eltwise(xs, op, coeffs):
    ops = caffe_pb2.EltwiseParameter
    y = xs[0]
    if op == ops.PROD:
        for x in xs[1:]:
            y = y * x
    elif op == ops.MAX:
        for x in xs[1:]:
            y = torch.maximum(y, x)
    else:
        y = y * coeffs[0] if coeffs[0] != 1 else y
        for x, c in zip(xs[1:], coeffs[1:]):
            y = y + (x * c if c != 1 else x)
    return y


def lstm_unit(c_prev, x, cont):
    i, f, o, g = x.chunk(4, dim=2)
    i, f, o, g = torch.sigmoid(i), torch.sigmoid(f), torch.sigmoid(o), torch.tanh(g)
    c = (f * cont.unsqueeze(2)) * c_prev + i * g
    return c, o * torch.tanh(c)
