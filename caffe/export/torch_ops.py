"""The torch emitter's ops: nn.Modules over torch.nn.functional that compute one Caffe layer
each. Where a layer's maths has Caffe's rules at the edges (pooling windows and divisors,
ArgMax ties, Crop offsets, MVN's eps), the op calls the layer's own function (caffe.layers)."""
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..layers.pooling import Pool2d
from ..proto import caffe_pb2
from .shapes import broadcast_shape, spp_levels


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


class Pool(Op):
    def __init__(self, method, kernel, stride, pad, ceil, mask):
        super().__init__()
        self.method, self.kernel, self.stride, self.pad = method, kernel, stride, pad
        self.ceil, self.mask = ceil, mask
        self.pools = {}     # input size -> Pool2d (its window plan depends on the size only)

    def forward(self, x):
        size = tuple(x.shape[2:])
        pool = self.pools.get(size)
        if pool is None:
            kernel = self.kernel or size        # global pooling
            pool = Pool2d(self.method, kernel, self.stride, self.pad, size, self.ceil)
            if len(self.pools) < 8:
                self.pools[size] = pool
        y = pool.forward(x, want_index=self.mask, train=False)
        return (y, pool.index.to(x.dtype)) if self.mask else y


class SPP(Op):
    def __init__(self, method, height):
        super().__init__()
        self.method, self.height = method, height

    def forward(self, x):
        levels = spp_levels(self.height, x.shape[2], x.shape[3])
        ys = [Pool2d(self.method, k, k, p, x.shape[2:]).forward(x, train=False)
              for k, p in levels]
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
