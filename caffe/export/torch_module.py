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

from .graph import Namer, layer_error, plan_net, plan_recurrent
from .torch_ops import (BatchNorm, Conv, Embed, LRN, SPP, Affine, Lambda, Linear, Op, Parameter,
                        Pool, PReLU, argmax, caffe_reshape, canonical_axis, crop, eltwise,
                        lstm_unit, mvn, reduction, slice_sizes)


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


# -- building ----------------------------------------------------------------------------
def _dropout(p):
    """Identity at TEST; Faster R-CNN's scale_train: false scales at test time instead."""
    if p.dropout_param.scale_train:
        return lambda x: x
    keep = 1.0 - p.dropout_param.dropout_ratio
    return lambda x: x * keep


_NEURONS = {
    "Sigmoid": lambda p: torch.sigmoid,
    "TanH": lambda p: torch.tanh,
    "AbsVal": lambda p: torch.abs,
    "BNLL": lambda p: F.softplus,
    "Dropout": _dropout,
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
            self.add(step, Pool(pp.pool, layer.kernel, layer.stride, layer.pad, layer.ceil,
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
            start, end = canonical_axis(fp.axis, rank), canonical_axis(fp.end_axis, rank)
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
            repeats[canonical_axis(tp.axis, rank)] = tp.tiles
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
