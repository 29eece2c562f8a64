"""caffe.Net -> ONNX, node by node with onnx.helper, keeping Caffe's numbers exactly.

Where ONNX's operator and Caffe's layer differ at the edges, the graph spells Caffe's
rule out: pooling windows get explicit pads so that Caffe's ceil-rounded output size and
its divisor (the window clipped to the padded input) hold on every runtime; ArgMax breaks
ties towards the larger index; Power, Exp and Log apply scale and shift in Caffe's order.
Shapes are static: the graph is exported for the shapes the net's inputs have now
(reshape them first for another batch size).
"""
import os

import numpy as np

from .._optional import require
from .graph import ExportError, Namer, layer_error, plan_net
from .shapes import (AVE, FLT_MAX, FLT_MIN, MAX, ave_divisor, broadcast_shape, pool_windows,
                     spp_levels)

DEFAULT_OPSET = 17
MIN_OPSET = 13        # Softmax over one axis, ReduceSum / Split / Slice taking tensors


def to_onnx(net, path=None, opset=DEFAULT_OPSET, outputs=None, name=None):
    """The net's forward as an onnx.ModelProto (saved to `path` when given).

    `outputs` names the blobs to export (default: the net's outputs); layers none of them
    needs are left out. Weights are stored as float32. A layer ONNX cannot express raises
    caffe.export.ExportError naming the layer and its type.
    """
    onnx = require("onnx", extra="onnx", feature="ONNX export")
    from onnx import TensorProto, helper
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ExportError(f"opset {opset} is not supported: use {MIN_OPSET} to "
                          f"{onnx.defs.onnx_opset_version()}")
    namer = Namer()
    plan = plan_net(net, outputs, namer)
    g = Builder(opset, namer)
    for step in plan.steps:
        convert_step(g, step)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(b.shape))
              for n, b in plan.inputs]
    outs, input_names, seen = [], {n for n, _ in plan.inputs}, set()
    for out_name, value, blob in plan.outputs:
        if out_name in input_names:
            # An input that layers overwrite in place: its final value goes out as
            # 'blob/layer', the input keeps the blob's name.
            out_name = value
        elif out_name != value:
            g.node("Identity", [value], out_name)
        if out_name not in seen:
            seen.add(out_name)
            outs.append(helper.make_tensor_value_info(out_name, TensorProto.FLOAT,
                                                      list(blob.shape)))
    graph = helper.make_graph(g.nodes, name or net.name or "caffe_net", inputs, outs,
                              initializer=g.initializers)
    opsets = [helper.make_opsetid("", opset)]
    from .. import __version__
    model = helper.make_model(graph, opset_imports=opsets, producer_name="pycaffe",
                              producer_version=__version__)
    # The oldest IR version that carries this opset, so older runtimes load the file.
    model.ir_version = helper.find_min_ir_version_for(opsets)
    if path is not None:
        # A protobuf message stops at 2 GiB: bigger models keep their weights beside the file.
        large = sum(t.ByteSize() for t in model.graph.initializer) > 2 ** 31 - 2 ** 26
        onnx.save(model, str(path), save_as_external_data=large,
                  location=os.path.basename(str(path)) + ".data" if large else None)
    return model


def _array(tensor, dtype=np.float32):
    return tensor.detach().cpu().numpy().astype(dtype)


class Builder:
    """Accumulates nodes and initializers with unique names."""

    def __init__(self, opset, namer):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper = helper, numpy_helper
        self.opset, self.namer = opset, namer
        self.nodes, self.initializers, self.cache = [], [], {}
        self.node_names = Namer()

    def fresh(self, hint):
        return self.namer.take(hint)

    def const(self, value, hint, dtype=np.float32, key=None):
        """An initializer; `key` identifies values that several layers share (RNN steps)."""
        if key is not None and key in self.cache:
            return self.cache[key]
        name = self.fresh(hint)
        array = np.asarray(value, dtype=dtype)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        if key is not None:
            self.cache[key] = name
        return name

    def blob(self, blob, hint, shape=None, transform=None):
        """A learned blob as a float32 initializer, reshaped (and transformed) as asked;
        blobs shared between layers become one initializer."""
        key = (blob.data.data_ptr(), blob.shape, tuple(shape or ()), transform)
        if key in self.cache:
            return self.cache[key]
        array = _array(blob.data)
        if shape is not None:
            array = array.reshape(shape)
        if transform == "T":
            array = array.T
        return self.const(array, hint, key=key)

    def ints(self, values, hint="shape"):
        values = list(values)
        return self.const(values, hint, np.int64, key=("ints", tuple(values)))

    def scalar(self, value, hint="c"):
        return self.const(np.float32(value), hint, key=("scalar", float(value)))

    def node(self, op, inputs, out=None, hint=None, n_out=1, **attrs):
        """Add a node; returns its output name (or names when out is a list / n_out > 1)."""
        hint = hint or op
        if out is None:
            outs = [self.fresh(hint if n_out == 1 else f"{hint}:{i}") for i in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(self.helper.make_node(op, list(inputs), outs,
                                                name=self.node_names.take(hint), **attrs))
        return outs[0] if isinstance(out, str) or (out is None and n_out == 1) else outs

    # -- small compositions ---------------------------------------------------------
    def reshape(self, x, shape, out=None, hint="reshape"):
        return self.node("Reshape", [x, self.ints(shape)], out, hint)

    def pad(self, x, before, after, value, hint):
        """Pad the trailing len(before) axes of a rank-(2 + len) tensor with a constant."""
        pads = [0, 0] + list(before) + [0, 0] + list(after)
        return self.node("Pad", [x, self.ints(pads, "pads"), self.scalar(value, "pad_value")],
                         hint=hint + "/pad", mode="constant")

    def slice(self, x, starts, ends, axes, steps=None, hint="slice"):
        inputs = [x, self.ints(starts, "starts"), self.ints(ends, "ends"), self.ints(axes, "axes")]
        if steps is not None:
            inputs.append(self.ints(steps, "steps"))
        return self.node("Slice", inputs, hint=hint)

    def reduce_sum(self, x, axes, keepdims, out=None, hint="sum"):
        return self.node("ReduceSum", [x, self.ints(axes, "axes")], out, hint,
                         keepdims=int(keepdims))

    def scale(self, x, factor, out=None, hint="scale"):
        if factor == 1 and out is None:
            return x
        return self.node("Mul", [x, self.scalar(factor)], out, hint)


CONVERTERS: dict = {}


def converter(*types):
    def register(fn):
        for t in types:
            CONVERTERS[t] = fn
        return fn
    return register


def convert_step(g, step):
    fn = CONVERTERS.get(step.type)
    if fn is None:
        raise layer_error(step.layer, "ONNX has no equivalent for this layer type (supported: "
                                      f"{', '.join(sorted(CONVERTERS))})")
    fn(g, step)


# -- neurons ---------------------------------------------------------------------------
@converter("ReLU")
def _relu(g, s):
    slope = s.layer.param.relu_param.negative_slope
    if slope == 0:
        g.node("Relu", s.bottoms, s.tops[0], s.name)
    else:
        g.node("LeakyRelu", s.bottoms, s.tops[0], s.name, alpha=slope)


_SIMPLE = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus",
           "Dropout": "Identity", "Split": "Identity"}


@converter(*_SIMPLE)
def _simple(g, s):
    for top in s.tops:       # Split has several tops, each a copy
        g.node(_SIMPLE[s.type], s.bottoms, top, s.name)


@converter("ELU")
def _elu(g, s):
    g.node("Elu", s.bottoms, s.tops[0], s.name, alpha=s.layer.param.elu_param.alpha)


@converter("PReLU")
def _prelu(g, s):
    layer, x = s.layer, s.bottom_blobs[0]
    shape = () if layer.param.prelu_param.channel_shared else \
        (x.shape[1],) + (1,) * (x.num_axes - 2)
    g.node("PRelu", [s.bottoms[0], g.blob(layer.blobs[0], s.name + ".slope", shape)],
           s.tops[0], s.name)


@converter("Clip")
def _clip(g, s):
    p = s.layer.param.clip_param
    g.node("Clip", [s.bottoms[0], g.scalar(p.min, "min"), g.scalar(p.max, "max")], s.tops[0],
           s.name)


@converter("Swish")
def _swish(g, s):
    x = s.bottoms[0]
    sig = g.node("Sigmoid", [g.scale(x, s.layer.param.swish_param.beta, hint=s.name)],
                 hint=s.name + "/sigmoid")
    g.node("Mul", [x, sig], s.tops[0], s.name)


@converter("Power")
def _power(g, s):
    p = s.layer.param.power_param
    x = s.bottoms[0]
    if p.power * p.scale == 0:          # a constant: Caffe fills without reading x
        value = 1.0 if p.power == 0 else float(np.float64(p.shift) ** np.float64(p.power))
        shape = g.node("Shape", [x], hint=s.name + "/shape")
        g.node("Expand", [g.scalar(value), shape], s.tops[0], s.name)
        return
    t = g.scale(x, p.scale, hint=s.name + "/scale")
    if p.shift != 0:
        t = g.node("Add", [t, g.scalar(p.shift)], hint=s.name + "/shift")
    if p.power == 1:
        g.node("Identity", [t], s.tops[0], s.name)
    else:
        g.node("Pow", [t, g.scalar(p.power)], s.tops[0], s.name)


@converter("Exp")
def _exp(g, s):
    layer = s.layer
    e = g.node("Exp", [g.scale(s.bottoms[0], layer.inner_scale, hint=s.name + "/inner")],
               None if layer.outer_scale != 1 else s.tops[0], s.name)
    if layer.outer_scale != 1:
        g.scale(e, layer.outer_scale, s.tops[0], s.name + "/outer")


@converter("Log")
def _log(g, s):
    p, layer = s.layer.param.log_param, s.layer
    t = g.scale(s.bottoms[0], p.scale, hint=s.name + "/scale")
    if p.shift != 0:
        t = g.node("Add", [t, g.scalar(p.shift)], hint=s.name + "/shift")
    if layer.base_scale == 1:
        g.node("Log", [t], s.tops[0], s.name)
    else:
        g.scale(g.node("Log", [t], hint=s.name), layer.base_scale, s.tops[0], s.name + "/base")


@converter("Threshold")
def _threshold(g, s):
    above = g.node("Greater", [s.bottoms[0], g.scalar(s.layer.param.threshold_param.threshold)],
                   hint=s.name)
    g.node("Cast", [above], s.tops[0], s.name + "/cast", to=1)


# -- vision --------------------------------------------------------------------------------
def _conv_view(s):
    """Reshape x into (num, C, *spatial[, 1]) for Conv when Caffe's axis or rank differ."""
    layer, b = s.layer, s.bottom_blobs[0]
    axis = layer.axis
    spatial = b.shape[axis + 1:]
    view = (b.count(0, axis), b.shape[axis]) + spatial + (() if spatial else (1,))
    return view, view != b.shape


def _conv_attrs(layer):
    kernel, stride, pad, dilation = layer.geometry
    if not kernel:        # no spatial axis: a 1-D convolution over length 1
        kernel, stride, pad, dilation = (1,), (1,), (0,), (1,)
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
                dilations=list(dilation), group=layer.group)


@converter("Convolution", "Deconvolution")
def _convolution(g, s):
    layer = s.layer
    view, reshaped = _conv_view(s)
    w = layer.blobs[0]
    shape = w.shape + (() if layer.geometry[0] else (1,))
    inputs = [g.blob(w, s.name + ".weight", shape)]
    if layer.bias_term:
        inputs.append(g.blob(layer.blobs[1], s.name + ".bias"))
    op = "ConvTranspose" if layer.type == "Deconvolution" else "Conv"
    for x, top, tb in zip(s.bottoms, s.tops, s.top_blobs):
        if reshaped:
            y = g.node(op, [g.reshape(x, view, hint=s.name + "/in")] + inputs, hint=s.name,
                       **_conv_attrs(layer))
            g.reshape(y, tb.shape, top, s.name + "/out")
        else:
            g.node(op, [x] + inputs, top, s.name, **_conv_attrs(layer))


@converter("Im2col")
def _im2col(g, s):
    # Caffe's column buffer is a grouped convolution with one-hot kernels: output channel
    # c * K + j picks kernel offset j of input channel c.
    layer, b = s.layer, s.bottom_blobs[0]
    kernel, stride, pad, dilation = layer.geometry
    k, c = int(np.prod(kernel)), b.shape[layer.axis]
    eye = np.tile(np.eye(k, dtype=np.float32).reshape((k, 1) + tuple(kernel)),
                  (c,) + (1,) * (len(kernel) + 1))
    view = (b.count(0, layer.axis), c) + b.shape[layer.axis + 1:]
    x = s.bottoms[0] if view == b.shape else g.reshape(s.bottoms[0], view, hint=s.name + "/in")
    y = g.node("Conv", [x, g.const(eye, s.name + ".onehot")], hint=s.name,
               kernel_shape=list(kernel), strides=list(stride), pads=list(pad) * 2,
               dilations=list(dilation), group=c)
    g.reshape(y, s.top_blobs[0].shape, s.tops[0], s.name + "/out")


def _pool(g, x, channels, method, kernel, stride, pad, size, ceil, hint, out=None, mask=None):
    """Caffe's 2-D pooling of x (N, C, H, W); `mask` names the MAX argmax top."""
    win = pool_windows(kernel, stride, pad, size, ceil)
    w, (kh, kw) = size[1], kernel
    if win.out == (1, 1) and tuple(kernel) == tuple(size) and not any(pad) and \
            method in (MAX, AVE) and mask is None:
        return g.node("GlobalMaxPool" if method == MAX else "GlobalAveragePool", [x], out, hint)
    before, after = list(win.before), list(win.after)
    if min(after) < 0:    # rows / columns no window reaches
        ends = [n + min(a, 0) for n, a in zip(size, after)]
        x = g.slice(x, [0, 0], ends, [2, 3], hint=hint + "/crop")
        size, after = tuple(ends), [max(a, 0) for a in after]
    attrs = dict(kernel_shape=list(kernel), strides=list(stride))
    if method == MAX:
        if not win.empty and max(before + after) < min(kernel):
            # ONNX's own padding (ignored by the max) fits: pads below the kernel size.
            attrs["pads"] = before + after
            if mask is None:
                return g.node("MaxPool", [x], out, hint, **attrs)
            y, index = g.node("MaxPool", [x], [out, g.fresh(hint + "/index")], hint, **attrs)
            # ONNX's index runs over N x C x H' x W'; Caffe's over the H x W plane.
            plane = g.node("Mod", [index, g.ints([size[0] * size[1]])], hint=hint + "/plane")
            if size[1] != w:
                row = g.node("Div", [plane, g.ints([size[1]])], hint=hint + "/row")
                col = g.node("Mod", [plane, g.ints([size[1]])], hint=hint + "/col")
                plane = g.node("Add", [g.node("Mul", [row, g.ints([w])], hint=hint + "/r"),
                                       col], hint=hint + "/plane")
            g.node("Cast", [plane], mask, hint + "/mask", to=1)
            return y
        if mask is not None:
            raise ExportError(f"cannot export layer '{hint}' (type Pooling): ONNX's MaxPool has "
                              f"no index for Caffe's mask where a window lies wholly outside "
                              f"the input")
        # Caffe starts every window at -FLT_MAX, which is what a window of padding gives.
        return g.node("MaxPool", [g.pad(x, before, after, -FLT_MAX, hint)], out, hint, **attrs)
    if method == AVE and all(a <= p for a, p in zip(after, pad)) and \
            max(before + after) < min(kernel):
        # Every window lies inside the padded input: Caffe's divisor is kh * kw, as ONNX's
        # with count_include_pad.
        return g.node("AveragePool", [x], out, hint, pads=before + after, count_include_pad=1,
                      **attrs)
    # Otherwise window sums (a depthwise convolution with ones: AveragePool's padding rules
    # differ between runtimes, and onnxruntime refuses pads reaching the kernel size)
    # divided by Caffe's divisor, or STOCHASTIC's test-time mean sum(x^2) / (sum(x) + FLT_MIN).
    ones = g.const(np.ones((channels, 1, kh, kw)), hint + ".ones", key=("ones", channels, kh, kw))
    conv = dict(attrs, pads=before + after, group=channels)
    if method == AVE:
        divisor = ave_divisor(win.out, size, kernel, stride, pad)
        sums = g.node("Conv", [x, ones], hint=hint + "/sum", **conv)
        return g.node("Div", [sums, g.const(divisor, hint + ".divisor")], out, hint)
    squares = g.node("Conv", [g.node("Mul", [x, x], hint=hint + "/square"), ones],
                     hint=hint + "/sumsq", **conv)
    sums = g.node("Conv", [x, ones], hint=hint + "/sum", **conv)
    return g.node("Div", [squares, g.node("Add", [sums, g.scalar(FLT_MIN)], hint=hint + "/eps")],
                  out, hint)


@converter("Pooling")
def _pooling(g, s):
    layer, b = s.layer, s.bottom_blobs[0]
    pool = layer.pool        # the layer's window geometry (global pooling resolved)
    _pool(g, s.bottoms[0], b.shape[1], layer.param.pooling_param.pool, pool.kernel,
          pool.stride, pool.pad, b.shape[2:], pool.ceil, s.name, s.tops[0],
          s.tops[1] if len(s.tops) > 1 else None)


@converter("SPP")
def _spp(g, s):
    b = s.bottom_blobs[0]
    n, c, h, w = b.shape
    levels = spp_levels(s.layer.param.spp_param.pyramid_height, h, w)
    pool = s.layer.param.spp_param.pool
    if len(levels) == 1:
        kernel, pad = levels[0]
        _pool(g, s.bottoms[0], c, pool, kernel, kernel, pad, (h, w), True, s.name, s.tops[0])
        return
    parts = []
    for i, (kernel, pad) in enumerate(levels):
        y = _pool(g, s.bottoms[0], c, pool, kernel, kernel, pad, (h, w), True,
                  f"{s.name}/{i}")
        parts.append(g.reshape(y, (n, -1), hint=f"{s.name}/{i}/flat"))
    g.node("Concat", parts, s.tops[0], s.name, axis=1)


@converter("LRN")
def _lrn(g, s):
    p, x = s.layer.param.lrn_param, s.bottoms[0]
    if s.layer.across:
        # ONNX's LRN, like Caffe's, divides alpha by the window size.
        g.node("LRN", [x], s.tops[0], s.name, size=p.local_size, alpha=p.alpha, beta=p.beta,
               bias=p.k)
        return
    n, half = p.local_size, (p.local_size - 1) // 2
    # Windows lie inside the padded input: the divisor is n * n everywhere.
    mean = g.node("AveragePool", [g.node("Mul", [x, x], hint=s.name + "/square")],
                  hint=s.name + "/mean", kernel_shape=[n, n], strides=[1, 1],
                  pads=[half] * 4, count_include_pad=1)
    scale = g.node("Add", [g.scale(mean, p.alpha, hint=s.name + "/alpha"), g.scalar(1.0)],
                   hint=s.name + "/scale")
    g.node("Mul", [x, g.node("Pow", [scale, g.scalar(-p.beta)], hint=s.name + "/pow")],
           s.tops[0], s.name)


# -- affine and normalization -------------------------------------------------------------
@converter("InnerProduct")
def _inner_product(g, s):
    layer, b, p = s.layer, s.bottom_blobs[0], s.layer.param.inner_product_param
    axis = b.canonical_axis_index(p.axis)
    x = s.bottoms[0]
    if not (b.num_axes == 2 and axis == 1):
        x = g.node("Flatten", [x], hint=s.name + "/flatten", axis=axis)
    n, k = p.num_output, layer.k
    w = g.blob(layer.blobs[0], s.name + ".weight", (k, n) if p.transpose else (n, k))
    inputs = [x, w] + ([g.blob(layer.blobs[1], s.name + ".bias", (n,))]
                       if len(layer.blobs) > 1 else [])
    top = s.top_blobs[0]
    if top.num_axes == 2:
        g.node("Gemm", inputs, s.tops[0], s.name, transB=0 if p.transpose else 1)
    else:
        y = g.node("Gemm", inputs, hint=s.name, transB=0 if p.transpose else 1)
        g.reshape(y, top.shape, s.tops[0], s.name + "/out")


@converter("Embed")
def _embed(g, s):
    layer, p = s.layer, s.layer.param.embed_param
    index = g.node("Cast", s.bottoms, hint=s.name + "/index", to=7)      # int64, truncating
    table = g.blob(layer.blobs[0], s.name + ".weight", (p.input_dim, p.num_output))
    if not p.bias_term:
        g.node("Gather", [table, index], s.tops[0], s.name)
        return
    y = g.node("Gather", [table, index], hint=s.name)
    g.node("Add", [y, g.blob(layer.blobs[1], s.name + ".bias", (p.num_output,))], s.tops[0],
           s.name + "/bias")


def _operand(g, s, source, axis, hint):
    """A Scale / Bias operand (bottom 1 or learned blob) shaped to broadcast over x."""
    x = s.bottom_blobs[0]
    if isinstance(source, int):
        blob, value = s.bottom_blobs[source], s.bottoms[source]
    else:
        blob, value = source, None
    shape = broadcast_shape(x.shape, blob.shape, axis)
    if value is None:
        return g.blob(blob, hint, shape)
    return value if shape == blob.shape else g.reshape(value, shape, hint=hint)


@converter("Scale")
def _scale(g, s):
    layer, p = s.layer, s.layer.param.scale_param
    factor = _operand(g, s, 1 if len(s.bottoms) > 1 else layer.blobs[0], p.axis, s.name + ".scale")
    if not layer.has_bias:
        g.node("Mul", [s.bottoms[0], factor], s.tops[0], s.name)
        return
    y = g.node("Mul", [s.bottoms[0], factor], hint=s.name)
    g.node("Add", [y, _operand(g, s, layer.blobs[-1], p.axis, s.name + ".bias")], s.tops[0],
           s.name + "/bias")


@converter("Bias")
def _bias(g, s):
    p = s.layer.param.bias_param
    bias = _operand(g, s, 1 if len(s.bottoms) > 1 else s.layer.blobs[0], p.axis, s.name + ".bias")
    g.node("Add", [s.bottoms[0], bias], s.tops[0], s.name)


@converter("BatchNorm")
def _batch_norm(g, s):
    layer, b = s.layer, s.bottom_blobs[0]
    blobs = [blob.data.detach().cpu().double().numpy().reshape(-1) for blob in layer.blobs]
    factor = 0.0 if blobs[2][0] == 0 else 1.0 / blobs[2][0]
    mean, var = blobs[0] * factor, blobs[1] * factor
    eps = layer.param.batch_norm_param.eps
    c = layer.channels
    if b.num_axes >= 2:
        ones, zeros = np.ones(c), np.zeros(c)
        g.node("BatchNormalization",
               [s.bottoms[0], g.const(ones, s.name + ".scale"), g.const(zeros, s.name + ".bias"),
                g.const(mean, s.name + ".mean"), g.const(var, s.name + ".var")],
               s.tops[0], s.name, epsilon=eps)
        return
    centred = g.node("Sub", [s.bottoms[0], g.const(mean, s.name + ".mean")], hint=s.name)
    g.node("Div", [centred, g.const(np.sqrt(var + eps), s.name + ".std")], s.tops[0], s.name)


@converter("MVN")
def _mvn(g, s):
    p, b = s.layer.param.mvn_param, s.bottom_blobs[0]
    rows = b.legacy_shape(0) * (1 if p.across_channels else b.legacy_shape(1))
    n = b.count() // max(rows, 1)
    x = g.reshape(s.bottoms[0], (rows, n), hint=s.name + "/rows")
    mean = g.node("Div", [g.reduce_sum(x, [1], True, hint=s.name + "/sum"), g.scalar(n)],
                  hint=s.name + "/mean")
    y = g.node("Sub", [x, mean], hint=s.name + "/centre")
    if p.normalize_variance:
        var = g.node("Div", [g.reduce_sum(g.node("Mul", [y, y], hint=s.name + "/sq"), [1], True,
                                          hint=s.name + "/sumsq"), g.scalar(n)],
                     hint=s.name + "/var")
        std = g.node("Add", [g.node("Sqrt", [var], hint=s.name + "/sqrt"), g.scalar(p.eps)],
                     hint=s.name + "/std")
        y = g.node("Div", [y, std], hint=s.name + "/scale")
    g.reshape(y, b.shape, s.tops[0], s.name)


@converter("Softmax")
def _softmax(g, s):
    g.node("Softmax", s.bottoms, s.tops[0], s.name, axis=s.layer.axis)


# -- structure ---------------------------------------------------------------------------
@converter("Concat")
def _concat(g, s):
    g.node("Concat", s.bottoms, s.tops[0], s.name, axis=s.layer.axis)


@converter("Slice")
def _slice(g, s):
    if len(s.tops) == 1:
        g.node("Identity", s.bottoms, s.tops[0], s.name)
        return
    g.node("Split", [s.bottoms[0], g.ints(s.layer.sizes, "split")], s.tops, s.name,
           axis=s.layer.axis)


@converter("Flatten", "Reshape")
def _reshape(g, s):
    g.reshape(s.bottoms[0], s.top_blobs[0].shape, s.tops[0], s.name)


@converter("Crop")
def _crop(g, s):
    window = s.layer.window
    axes = [i for i, w in enumerate(window) if w != slice(None)]
    g.node("Identity", [g.slice(s.bottoms[0], [window[i].start for i in axes],
                                [window[i].stop for i in axes], axes, hint=s.name)],
           s.tops[0], s.name + "/out")


@converter("Tile")
def _tile(g, s):
    p, b = s.layer.param.tile_param, s.bottom_blobs[0]
    repeats = [1] * b.num_axes
    repeats[b.canonical_axis_index(p.axis)] = p.tiles
    g.node("Tile", [s.bottoms[0], g.ints(repeats, "repeats")], s.tops[0], s.name)


@converter("Eltwise")
def _eltwise(g, s):
    from ..proto import caffe_pb2
    ops = caffe_pb2.EltwiseParameter
    layer, xs = s.layer, s.bottoms
    if layer.op == ops.MAX:
        g.node("Max", xs, s.tops[0], s.name)
        return
    if layer.op == ops.PROD:
        y = xs[0]
        for i, x in enumerate(xs[1:], 1):
            y = g.node("Mul", [y, x], s.tops[0] if i == len(xs) - 1 else None, s.name)
        return
    terms = [g.scale(x, c, hint=f"{s.name}/coeff{i}") for i, (x, c) in
             enumerate(zip(xs, layer.coeffs))]
    y = terms[0]
    for i, t in enumerate(terms[1:], 1):
        y = g.node("Add", [y, t], s.tops[0] if i == len(terms) - 1 else None, s.name)


@converter("Reduction")
def _reduction(g, s):
    from ..proto import caffe_pb2
    ops = caffe_pb2.ReductionParameter
    layer, b = s.layer, s.bottom_blobs[0]
    op, x = layer.param.reduction_param.operation, s.bottoms[0]
    if op == ops.ASUM:
        x = g.node("Abs", [x], hint=s.name + "/abs")
    elif op == ops.SUMSQ:
        x = g.node("Mul", [x, x], hint=s.name + "/square")
    axis = len(s.top_blobs[0].shape)     # the top keeps the axes before `axis`
    total = g.reduce_sum(x, list(range(axis, b.num_axes)), False,
                         None if layer.coeff != 1 else s.tops[0], s.name)
    if layer.coeff != 1:
        g.scale(total, layer.coeff, s.tops[0], s.name + "/coeff")


@converter("ArgMax")
def _argmax(g, s):
    p, b, top = s.layer.param.argmax_param, s.bottom_blobs[0], s.top_blobs[0]
    x = s.bottoms[0]
    if p.HasField("axis"):
        axis = b.canonical_axis_index(p.axis)
    else:
        axis, x = 1, g.reshape(x, (b.shape[0], b.count(1)), hint=s.name + "/flat")
    dim = b.shape[axis] if p.HasField("axis") else b.count(1)
    # Caffe ranks equal values by the larger index; TopK ranks them by the smaller one,
    # so it runs on the axis reversed.
    rev = g.slice(x, [-1], [-(2 ** 62)], [axis], [-1], hint=s.name + "/reverse")
    values, rindex = g.node("TopK", [rev, g.ints([p.top_k], "k")], hint=s.name, n_out=2,
                            axis=axis, largest=1, sorted=1)
    index = g.node("Sub", [g.ints([dim - 1], "last"), rindex], hint=s.name + "/index")
    index = g.node("Cast", [index], hint=s.name + "/float", to=1)
    if p.HasField("axis"):
        g.node("Identity", [values if p.out_max_val else index], s.tops[0], s.name + "/out")
        return
    if p.out_max_val:
        both = [g.node("Unsqueeze", [t, g.ints([1], "axes")], hint=s.name + "/unsqueeze")
                for t in (index, values)]
        index = g.node("Concat", both, hint=s.name + "/concat", axis=1)
    g.reshape(index, top.shape, s.tops[0], s.name + "/out")


@converter("BatchReindex")
def _batch_reindex(g, s):
    index = g.node("Cast", [s.bottoms[1]], hint=s.name + "/index", to=7)
    g.node("Gather", [s.bottoms[0], index], s.tops[0], s.name, axis=0)


@converter("Parameter")
def _parameter(g, s):
    g.node("Identity", [g.blob(s.layer.blobs[0], s.name + ".value")], s.tops[0], s.name)


@converter("Silence")
def _silence(g, s):
    """Nothing to compute (and no tops)."""


# -- recurrent -----------------------------------------------------------------------------
@converter("LSTMUnit")
def _lstm_unit(g, s):
    c_prev, x, cont = s.bottoms
    gates = g.node("Split", [x], hint=s.name + "/gates", n_out=4, axis=2)
    i, f, o = (g.node("Sigmoid", [t], hint=s.name + "/sigmoid") for t in gates[:3])
    cell = g.node("Tanh", [gates[3]], hint=s.name + "/tanh")
    keep = g.node("Unsqueeze", [cont, g.ints([2], "axes")], hint=s.name + "/cont")
    f = g.node("Mul", [f, keep], hint=s.name + "/forget")
    c = g.node("Add", [g.node("Mul", [f, c_prev], hint=s.name + "/fc"),
                       g.node("Mul", [i, cell], hint=s.name + "/ig")], s.tops[0], s.name + "/c")
    g.node("Mul", [o, g.node("Tanh", [c], hint=s.name + "/tanh_c")], s.tops[1], s.name + "/h")


@converter("RNN", "LSTM")
def _recurrent(g, s):
    # The layer runs an unrolled inner net (Slice, InnerProduct, Eltwise, LSTMUnit, ...):
    # export that net's layers in its place. The state starts at zero, as in a freshly
    # built net; with expose_hidden it is an input.
    layer = s.layer
    feeds = {"x": s.bottoms[0], "cont": s.bottoms[1]}
    if layer.static_input:
        feeds["x_static"] = s.bottoms[2]
    hidden = s.bottoms[2 + layer.static_input:]
    for i, name in enumerate(layer.recurrent_input_names()):
        blob = layer.recur_inputs[i]
        feeds[name] = hidden[i] if layer.expose_hidden else \
            g.const(np.zeros(blob.shape), f"{s.name}.{name}")
    inner = layer.net
    wanted = [layer.output_name] + (layer.recurrent_output_names() if layer.expose_hidden
                                    else [])
    plan = plan_net(inner, wanted, g.namer, scope=s.name + "/", feeds=feeds)
    for step in plan.steps:
        convert_step(g, step)
    for top, (_, value, _) in zip(s.tops, plan.outputs):
        g.node("Identity", [value], top, s.name + "/out")
