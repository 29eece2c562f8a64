"""caffe.Net -> torch.nn.Module built from standard torch.nn.functional ops.

The module holds the net's weights as parameters (statistics as buffers), in the net's
dtype, and runs the net's forward: `module(data)` or `module(data=...)`, returning the
output tensor (a tuple when the net has several outputs, in `module.output_names` order).
Unlike the ONNX export it follows its inputs' shapes, as the net does after a reshape.
It is a plain module: train it with torch.optim, move it with .to(), save it with
torch.export (no caffe needed to load that), or keep its state_dict.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..layers.pooling import pooled_length
from ..proto import caffe_pb2
from .graph import Namer, layer_error, plan_net
from .shapes import (AVE, FLT_MAX, FLT_MIN, MAX, ave_divisor, broadcast_shape, pool_windows,
                     spp_levels)


def to_torch(net, outputs=None):
    """A CaffeModule computing the net's `outputs` (blob names; default the net's outputs)."""
    builder = _Builder()
    plan = plan_net(net, outputs, builder.namer)
    for step in plan.steps:
        builder.convert(step)
    return CaffeModule(builder.ops, [n for n, _ in plan.inputs],
                       [n for n, _, _ in plan.outputs], [v for _, v, _ in plan.outputs])


class CaffeModule(nn.Module):
    """A Caffe net's forward pass: `layers` runs in order over a dict of named values."""

    def __init__(self, ops, input_names, output_names, output_values=None):
        super().__init__()
        self.layers = nn.ModuleDict(ops)
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.output_values = list(output_values or output_names)

    def forward(self, *args, **kwargs):
        if len(args) > len(self.input_names):
            raise TypeError(f"the net takes {len(self.input_names)} inputs "
                            f"({', '.join(self.input_names)}), got {len(args)}")
        values = dict(zip(self.input_names, args))
        values.update(kwargs)
        missing = [n for n in self.input_names if n not in values]
        if missing or len(values) != len(self.input_names):
            raise TypeError(f"the net's inputs are {self.input_names}, got {sorted(values)}")
        for op in self.layers.values():
            result = op(*[values[k] for k in op.inputs])
            if len(op.outputs) == 1:
                values[op.outputs[0]] = result
            else:
                values.update(zip(op.outputs, result))
        outs = tuple(values[v] for v in self.output_values)
        return outs[0] if len(outs) == 1 else outs


# -- the ops ------------------------------------------------------------------------------
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


def _canonical(axis, rank):
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
    start = _canonical(axis, x.dim())
    for i in range(start, x.dim()):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        x = x.narrow(i, offset, ref.shape[i])
    return x


def argmax(x, p):
    """Caffe's ArgMax: ties rank the larger index first."""
    if p.HasField("axis"):
        axis = _canonical(p.axis, x.dim())
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
    axis = _canonical(p.axis, x.dim())
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


# -- building ----------------------------------------------------------------------------
_NEURONS = {
    "Sigmoid": lambda p: torch.sigmoid,
    "TanH": lambda p: torch.tanh,
    "AbsVal": lambda p: torch.abs,
    "BNLL": lambda p: F.softplus,
    "Dropout": lambda p: (lambda x: x),
    "ELU": lambda p: (lambda x, a=p.elu_param.alpha: F.elu(x, a)),
    "Clip": lambda p: (lambda x, lo=p.clip_param.min, hi=p.clip_param.max:
                       torch.clamp(x, lo, hi)),
    "Swish": lambda p: (lambda x, b=p.swish_param.beta: x * torch.sigmoid(b * x)),
    "Threshold": lambda p: (lambda x, t=p.threshold_param.threshold: (x > t).to(x.dtype)),
}


def _relu(p):
    slope = p.relu_param.negative_slope
    return F.relu if slope == 0 else (lambda x: F.leaky_relu(x, slope))


def _power(p):
    p = p.power_param
    if p.power * p.scale == 0:    # a constant: Caffe fills without reading x
        value = 1.0 if p.power == 0 else float(np.float64(p.shift) ** np.float64(p.power))
        return lambda x: torch.full_like(x, value)
    return lambda x: torch.pow(x * p.scale + p.shift, p.power) if p.power != 1 else \
        x * p.scale + p.shift


class _Builder:
    def __init__(self):
        self.namer, self.keys = Namer(), Namer()
        self.ops, self.params = {}, {}

    def param(self, blob, shape=None, transform=None):
        """A learned blob as an nn.Parameter; blobs that layers share stay shared."""
        key = (blob.data.data_ptr(), blob.shape, tuple(shape or ()), transform)
        if key not in self.params:
            value = blob.data.detach().clone()
            if shape is not None:
                value = value.reshape(shape)
            if transform == "T":
                value = value.t()
            self.params[key] = nn.Parameter(value.contiguous())
        return self.params[key]

    def add(self, step, op, inputs=None, outputs=None):
        if isinstance(op, Lambda) and not op.kind:
            op.kind = step.type
        op.inputs = list(step.bottoms if inputs is None else inputs)
        op.outputs = list(step.tops if outputs is None else outputs)
        key = "".join(c if c.isalnum() or c == "_" else "_" for c in step.name)
        self.ops[self.keys.take(key)] = op
        return op

    def convert(self, step):
        layer, p, t = step.layer, step.layer.param, step.type
        if t in _NEURONS:
            self.add(step, Lambda(_NEURONS[t](p)))
        elif t == "ReLU":
            self.add(step, Lambda(_relu(p)))
        elif t == "Power":
            self.add(step, Lambda(_power(p)))
        elif t == "Exp":
            inner, outer = layer.inner_scale, layer.outer_scale
            self.add(step, Lambda(lambda x: torch.exp(inner * x) * outer))
        elif t == "Log":
            lp, base = p.log_param, layer.base_scale
            self.add(step, Lambda(lambda x: torch.log(lp.scale * x + lp.shift) * base))
        elif t == "PReLU":
            self.add(step, PReLU(self.param(layer.blobs[0]), p.prelu_param.channel_shared))
        elif t in ("Convolution", "Deconvolution", "Im2col") and len(layer.geometry[0]) > 3:
            raise layer_error(layer, "torch has no convolution over more than 3 spatial axes")
        elif t in ("Convolution", "Deconvolution"):
            bias = self.param(layer.blobs[1]) if layer.bias_term else None
            conv = Conv(self.param(layer.blobs[0]), bias, layer.geometry, layer.group,
                        layer.axis, t == "Deconvolution")
            for i, (x, y) in enumerate(zip(step.bottoms, step.tops)):
                self.add(step, conv if i == 0 else _Shared(conv), [x], [y])
        elif t == "Im2col":
            kernel = layer.geometry[0]
            k, c = math.prod(kernel), step.bottom_blobs[0].shape[layer.axis]
            eye = torch.eye(k, dtype=layer.dtype).reshape((k, 1) + tuple(kernel))
            self.add(step, Conv(eye.repeat((c,) + (1,) * (len(kernel) + 1)), None,
                                layer.geometry, c, layer.axis, False, one_hot=True))
        elif t == "Pooling":
            pp = p.pooling_param
            ceil = pp.round_mode == caffe_pb2.PoolingParameter.CEIL
            self.add(step, Pool(pp.pool, layer.kernel, layer.stride, layer.pad, ceil,
                                len(step.tops) > 1))
        elif t == "SPP":
            self.add(step, SPP(p.spp_param.pool, p.spp_param.pyramid_height))
        elif t == "LRN":
            self.add(step, LRN(p.lrn_param))
        elif t == "InnerProduct":
            ip = p.inner_product_param
            # F.linear takes (N, K); Caffe's transpose stores (K, N).
            w = self.param(layer.blobs[0], (layer.k, ip.num_output), "T") if ip.transpose \
                else self.param(layer.blobs[0], (ip.num_output, layer.k))
            bias = self.param(layer.blobs[1], (ip.num_output,)) if len(layer.blobs) > 1 \
                else None
            self.add(step, Linear(w, bias, step.bottom_blobs[0].canonical_axis_index(ip.axis)))
        elif t == "Embed":
            ep = p.embed_param
            self.add(step, Embed(self.param(layer.blobs[0], (ep.input_dim, ep.num_output)),
                                 self.param(layer.blobs[1], (ep.num_output,))
                                 if ep.bias_term else None))
        elif t == "Scale":
            two = len(step.bottoms) > 1
            scale = None if two else self.param(layer.blobs[0])
            bias = self.param(layer.blobs[-1]) if layer.has_bias else None
            self.add(step, Affine(p.scale_param.axis, scale, bias, scale_from_input=two))
        elif t == "Bias":
            two = len(step.bottoms) > 1
            self.add(step, Affine(p.bias_param.axis, None, None if two else
                                  self.param(layer.blobs[0]), bias_from_input=two))
        elif t == "BatchNorm":
            s = layer.blobs[2].data.reshape(())
            factor = torch.where(s == 0, torch.zeros_like(s), 1 / s)
            mean = (layer.blobs[0].data.reshape(-1) * factor).clone()
            var = (layer.blobs[1].data.reshape(-1) * factor).clone()
            self.add(step, BatchNorm(mean, var, p.batch_norm_param.eps))
        elif t == "MVN":
            mp = p.mvn_param
            self.add(step, Lambda(lambda x: mvn(x, mp)))
        elif t == "Softmax":
            axis = layer.axis
            self.add(step, Lambda(lambda x: torch.softmax(x, axis)))
        elif t == "Concat":
            axis = layer.axis
            self.add(step, Lambda(lambda *xs: torch.cat(xs, axis)))
        elif t == "Slice":
            axis, points, n = layer.axis, list(p.slice_param.slice_point), len(step.tops)
            self.add(step, Lambda(lambda x: torch.split(
                x, slice_sizes(x.shape[axis], points, n), axis) if n > 1 else x))
        elif t == "Split":
            n = len(step.tops)
            self.add(step, Lambda(lambda x: (x,) * n if n > 1 else x))
        elif t == "Flatten":
            fp, rank = p.flatten_param, step.bottom_blobs[0].num_axes
            start, end = _canonical(fp.axis, rank), _canonical(fp.end_axis, rank)
            self.add(step, Lambda(lambda x: x.flatten(start, end)))
        elif t == "Reshape":
            rp = p.reshape_param
            dims, axis, num_axes = list(rp.shape.dim), rp.axis, rp.num_axes
            self.add(step, Lambda(lambda x: caffe_reshape(x, dims, axis, num_axes)))
        elif t == "Crop":
            cp = p.crop_param
            axis, offsets = cp.axis, list(cp.offset)
            self.add(step, Lambda(lambda x, ref: crop(x, ref, axis, offsets)))
        elif t == "Tile":
            tp, rank = p.tile_param, step.bottom_blobs[0].num_axes
            repeats = [1] * rank
            repeats[_canonical(tp.axis, rank)] = tp.tiles
            self.add(step, Lambda(lambda x: x.repeat(repeats)))
        elif t == "Eltwise":
            op, coeffs = layer.op, list(layer.coeffs)
            self.add(step, Lambda(lambda *xs: eltwise(xs, op, coeffs)))
        elif t == "Reduction":
            rp = p.reduction_param
            self.add(step, Lambda(lambda x: reduction(x, rp)))
        elif t == "ArgMax":
            ap = p.argmax_param
            self.add(step, Lambda(lambda x: argmax(x, ap)))
        elif t == "BatchReindex":
            self.add(step, Lambda(lambda x, i: x.index_select(0, i.long())))
        elif t == "Parameter":
            self.add(step, Parameter(self.param(layer.blobs[0])))
        elif t == "Silence":
            pass
        elif t == "LSTMUnit":
            self.add(step, Lambda(lstm_unit))
        elif t in ("RNN", "LSTM"):
            self.recurrent(step)
        else:
            raise layer_error(layer, "no PyTorch equivalent for this layer type")

    def recurrent(self, step):
        # The unrolled inner net's layers take the layer's place; the state starts at zero
        # (a freshly built net), or comes from the bottoms with expose_hidden.
        layer = step.layer
        feeds = {"x": step.bottoms[0], "cont": step.bottoms[1]}
        if layer.static_input:
            feeds["x_static"] = step.bottoms[2]
        hidden = step.bottoms[2 + layer.static_input:]
        for i, name in enumerate(layer.recurrent_input_names()):
            if layer.expose_hidden:
                feeds[name] = hidden[i]
                continue
            feeds[name] = self.namer.take(f"{step.name}/{name}")
            width = layer.num_output
            self.add(step, Lambda(lambda x, d=width: x.new_zeros((1, x.shape[1], d))),
                     [step.bottoms[0]], [feeds[name]])
        wanted = [layer.output_name] + (layer.recurrent_output_names()
                                        if layer.expose_hidden else [])
        plan = plan_net(layer.net, wanted, self.namer, scope=step.name + "/", feeds=feeds)
        for inner in plan.steps:
            self.convert(inner)
        for top, (_, value, _) in zip(step.tops, plan.outputs):
            self.add(step, Lambda(lambda v: v), [value], [top])


class _Shared(Op):
    """A second bottom/top pair of a convolution (same weights)."""

    def __init__(self, op):
        super().__init__()
        self.__dict__["op"] = op      # not a submodule: the weights are registered once

    def forward(self, x):
        return self.op(x)
