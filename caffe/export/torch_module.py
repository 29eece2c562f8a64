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

from ..blob import canonical_axis_index
from ..layers.common_layers import crop_window, reshaped
from ..layers.community import shuffle_channels
from ..layers.normalization import mvn
from ..layers.recurrent import lstm_unit
from ..layers.reduction import argmax, eltwise, reduce_rows
from .graph import Namer, layer_error, plan_net, plan_recurrent
from .torch_ops import (BatchNorm, Conv, Embed, LRN, SPP, Affine, Lambda, Linear, Op, Parameter,
                        Pool, PReLU)


def to_torch(net, outputs=None):
    """A CaffeModule computing the net's `outputs` (blob names; default the net's outputs)."""
    builder = TorchBuilder()
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


# -- the converters: one per layer type, registered by its Caffe type string ----------------
TORCH_CONVERTERS: dict = {}


def converts(*types):
    """Decorator: fn(builder, step) adds the ops computing a layer of these types."""
    def register(fn):
        for t in types:
            if t in TORCH_CONVERTERS:
                raise ValueError(f"a torch converter for '{t}' is registered already")
            TORCH_CONVERTERS[t] = fn
        return fn
    return register


def elementwise(*types):
    """Decorator for a parameter-free element-wise layer: fn(layer) returns x -> y."""
    def register(fn):
        converts(*types)(lambda b, step: b.add(step, Lambda(fn(step.layer))))
        return fn
    return register


for _type, _fn in {"Sigmoid": torch.sigmoid, "TanH": torch.tanh, "AbsVal": torch.abs,
                   "BNLL": F.softplus}.items():
    elementwise(_type)(lambda layer, fn=_fn: fn)


@elementwise("Dropout")
def _dropout(layer):
    """Identity at TEST; Faster R-CNN's scale_train: false scales at test time instead."""
    p = layer.param.dropout_param
    keep = 1.0 - p.dropout_ratio
    return (lambda x: x) if p.scale_train else (lambda x: x * keep)


@elementwise("ReLU6")
def _relu6(layer):
    slope = layer.param.relu6_param.negative_slope
    return (lambda x: torch.clamp(x, 0, 6)) if slope == 0 else \
        (lambda x: torch.clamp(torch.where(x > 0, x, x * slope), max=6))


@elementwise("HardSwish")
def _hard_swish(layer):
    return lambda x: x * torch.clamp(x + 3, 0, 6) / 6


@elementwise("HardSigmoid")
def _hard_sigmoid(layer):
    return lambda x: torch.clamp(0.2 * x + 0.5, 0, 1)


@elementwise("Mish")
def _mish(layer):
    return lambda x: x * torch.tanh(F.softplus(x))


@elementwise("ShuffleChannel")
def _shuffle_channel(layer):
    return lambda x, g=layer.param.shuffle_channel_param.group: shuffle_channels(x, g)


@elementwise("ELU")
def _elu(layer):
    return lambda x, a=layer.param.elu_param.alpha: F.elu(x, a)


@elementwise("Clip")
def _clip(layer):
    p = layer.param.clip_param
    return lambda x: torch.clamp(x, p.min, p.max)


@elementwise("Swish")
def _swish(layer):
    return lambda x, beta=layer.param.swish_param.beta: x * torch.sigmoid(beta * x)


@elementwise("Threshold")
def _threshold(layer):
    return lambda x, t=layer.param.threshold_param.threshold: (x > t).to(x.dtype)


@elementwise("ReLU")
def _relu(layer):
    slope = layer.param.relu_param.negative_slope
    return F.relu if slope == 0 else (lambda x: F.leaky_relu(x, slope))


@elementwise("Power")
def _power(layer):
    p = layer.param.power_param
    if p.power * p.scale == 0:    # a constant: Caffe fills without reading x
        value = 1.0 if p.power == 0 else float(np.float64(p.shift) ** np.float64(p.power))
        return lambda x: torch.full_like(x, value)
    return lambda x: torch.pow(x * p.scale + p.shift, p.power) if p.power != 1 else \
        x * p.scale + p.shift


@elementwise("Exp")
def _exp(layer):
    inner, outer = layer.inner_scale, layer.outer_scale
    return lambda x: torch.exp(inner * x) * outer


@elementwise("Log")
def _log(layer):
    lp, base = layer.param.log_param, layer.base_scale
    return lambda x: torch.log(lp.scale * x + lp.shift) * base


@converts("PReLU")
def _prelu(b, step):
    b.add(step, PReLU(b.param(step.layer.blobs[0]), step.layer.param.prelu_param.channel_shared))


@converts("Convolution", "Deconvolution", "ConvolutionDepthwise", "DepthwiseConvolution")
def _convolution(b, step):
    layer = step.layer
    if len(layer.geometry[0]) > 3:
        raise layer_error(layer, "torch has no convolution over more than 3 spatial axes")
    bias = b.param(layer.blobs[1]) if layer.bias_term else None
    conv = Conv(b.param(layer.blobs[0]), bias, layer.geometry, layer.group, layer.axis,
                layer.transposed)
    for i, (x, y) in enumerate(zip(step.bottoms, step.tops)):
        b.add(step, conv if i == 0 else _Shared(conv), [x], [y])


@converts("Im2col")
def _im2col(b, step):
    layer = step.layer
    if len(layer.geometry[0]) > 3:
        raise layer_error(layer, "torch has no convolution over more than 3 spatial axes")
    kernel = layer.geometry[0]
    k, c = math.prod(kernel), step.bottom_blobs[0].shape[layer.axis]
    eye = torch.eye(k, dtype=layer.dtype).reshape((k, 1) + tuple(kernel))
    b.add(step, Conv(eye.repeat((c,) + (1,) * (len(kernel) + 1)), None, layer.geometry, c,
                     layer.axis, False, one_hot=True))


@converts("Pooling")
def _pooling(b, step):
    layer, pp = step.layer, step.layer.param.pooling_param
    b.add(step, Pool(pp.pool, layer.kernel, layer.stride, layer.pad, layer.ceil,
                     len(step.tops) > 1))


@converts("SPP")
def _spp(b, step):
    p = step.layer.param.spp_param
    b.add(step, SPP(p.pool, p.pyramid_height))


@converts("LRN")
def _lrn(b, step):
    b.add(step, LRN(step.layer.param.lrn_param))


@converts("InnerProduct")
def _inner_product(b, step):
    layer, ip = step.layer, step.layer.param.inner_product_param
    # F.linear takes (N, K); Caffe's transpose stores (K, N).
    w = b.param(layer.blobs[0], (layer.k, ip.num_output), "T") if ip.transpose \
        else b.param(layer.blobs[0], (ip.num_output, layer.k))
    bias = b.param(layer.blobs[1], (ip.num_output,)) if len(layer.blobs) > 1 else None
    b.add(step, Linear(w, bias, step.bottom_blobs[0].canonical_axis_index(ip.axis)))


@converts("Embed")
def _embed(b, step):
    layer, ep = step.layer, step.layer.param.embed_param
    b.add(step, Embed(b.param(layer.blobs[0], (ep.input_dim, ep.num_output)),
                      b.param(layer.blobs[1], (ep.num_output,)) if ep.bias_term else None))


@converts("Scale")
def _scale(b, step):
    layer, two = step.layer, len(step.bottoms) > 1
    scale = None if two else b.param(layer.blobs[0])
    bias = b.param(layer.blobs[-1]) if layer.has_bias else None
    b.add(step, Affine(layer.param.scale_param.axis, scale, bias, scale_from_input=two))


@converts("Bias")
def _bias(b, step):
    layer, two = step.layer, len(step.bottoms) > 1
    b.add(step, Affine(layer.param.bias_param.axis, None,
                       None if two else b.param(layer.blobs[0]), bias_from_input=two))


@converts("BatchNorm")
def _batch_norm(b, step):
    layer = step.layer
    factor = layer.stats_factor().reshape(())
    mean = (layer.blobs[0].data.reshape(-1) * factor).clone()
    var = (layer.blobs[1].data.reshape(-1) * factor).clone()
    b.add(step, BatchNorm(mean, var, layer.param.batch_norm_param.eps))


@converts("MVN")
def _mvn(b, step):
    p = step.layer.param.mvn_param

    def fn(x):
        # Caffe's legacy num() and channels(): missing leading axes count as 1.
        n, c = (list(x.shape[:2]) + [1, 1])[:2]
        return mvn(x, n if p.across_channels else n * c, p)[0]
    b.add(step, Lambda(fn))


@converts("Softmax")
def _softmax(b, step):
    axis = step.layer.axis
    b.add(step, Lambda(lambda x: torch.softmax(x, axis)))


@converts("Concat")
def _concat(b, step):
    axis = step.layer.axis
    b.add(step, Lambda(lambda *xs: torch.cat(xs, axis)))


@converts("Slice")
def _slice(b, step):
    axis, n = step.layer.axis, len(step.tops)
    points = list(step.layer.param.slice_param.slice_point)

    def sizes(length):
        if points:
            bounds = [0] + points + [length]
            return [hi - lo for lo, hi in zip(bounds, bounds[1:])]
        return [length // n] * n
    b.add(step, Lambda(lambda x: torch.split(x, sizes(x.shape[axis]), axis) if n > 1 else x))


@converts("Split")
def _split(b, step):
    n = len(step.tops)
    b.add(step, Lambda(lambda x: (x,) * n if n > 1 else x))


@converts("Flatten")
def _flatten(b, step):
    fp, rank = step.layer.param.flatten_param, step.bottom_blobs[0].num_axes
    start, end = canonical_axis_index(fp.axis, rank), canonical_axis_index(fp.end_axis, rank)
    b.add(step, Lambda(lambda x: x.flatten(start, end)))


@converts("Reshape")
def _reshape(b, step):
    rp = step.layer.param.reshape_param
    dims, axis, num_axes = list(rp.shape.dim), rp.axis, rp.num_axes
    b.add(step, Lambda(lambda x: x.reshape(reshaped(x.shape, dims, axis, num_axes))))


@converts("Crop")
def _crop(b, step):
    cp = step.layer.param.crop_param
    axis, offsets = cp.axis, list(cp.offset)
    b.add(step, Lambda(lambda x, ref: x[crop_window(
        x.shape, ref.shape, canonical_axis_index(axis, x.dim()), offsets)]))


@converts("Tile")
def _tile(b, step):
    tp, rank = step.layer.param.tile_param, step.bottom_blobs[0].num_axes
    repeats = [1] * rank
    repeats[canonical_axis_index(tp.axis, rank)] = tp.tiles
    b.add(step, Lambda(lambda x: x.repeat(repeats)))


@converts("Eltwise")
def _eltwise(b, step):
    op, coeffs = step.layer.op, list(step.layer.coeffs)
    b.add(step, Lambda(lambda *xs: eltwise(xs, op, coeffs)))


@converts("Reduction")
def _reduction(b, step):
    rp = step.layer.param.reduction_param

    def fn(x):
        axis = canonical_axis_index(rp.axis, x.dim())
        rows = x.reshape(math.prod(x.shape[:axis]), -1)
        coeff = rp.coeff / max(rows.shape[1], 1) if rp.operation == rp.MEAN else rp.coeff
        return reduce_rows(rows, rp.operation, coeff).reshape(x.shape[:axis])
    b.add(step, Lambda(fn))


@converts("ArgMax")
def _argmax(b, step):
    ap = step.layer.param.argmax_param
    b.add(step, Lambda(lambda x: argmax(x, ap)))


@converts("BatchReindex")
def _batch_reindex(b, step):
    b.add(step, Lambda(lambda x, i: x.index_select(0, i.long())))


@converts("Parameter")
def _parameter(b, step):
    b.add(step, Parameter(b.param(step.layer.blobs[0])))


@converts("Silence")
def _silence(b, step):
    pass


@converts("LSTMUnit")
def _lstm_unit(b, step):
    def fn(c_prev, x, cont):
        c, h, _ = lstm_unit(c_prev[0], x[0], cont[0])
        return c.unsqueeze(0), h.unsqueeze(0)
    b.add(step, Lambda(fn))


@converts("RNN", "LSTM")
def _recurrent(b, step):
    b.recurrent(step)


class TorchBuilder:
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
        convert = TORCH_CONVERTERS.get(step.type)
        if convert is None:
            raise layer_error(step.layer, "no PyTorch equivalent for this layer type")
        convert(self, step)

    def recurrent(self, step):
        # The unrolled inner net's layers take the layer's place.
        def zero_state(name, blob):
            value, width = self.namer.take(f"{step.name}/{name}"), step.layer.num_output
            self.add(step, Lambda(lambda x, d=width: x.new_zeros((1, x.shape[1], d))),
                     [step.bottoms[0]], [value])
            return value
        plan = plan_recurrent(step, self.namer, zero_state)
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
