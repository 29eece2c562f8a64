"""ONNX converters for the neuron and vision layers (convolution, pooling, LRN, inner product)."""
import numpy as np

from .graph import ExportError
from .onnx_builder import converter
from .shapes import AVE, FLT_MAX, FLT_MIN, MAX, ave_divisor, pool_windows, spp_levels


# -- neurons ---------------------------------------------------------------------------
@converter("ReLU")
def _relu(g, s):
    slope = s.layer.param.relu_param.negative_slope
    if slope == 0:
        g.node("Relu", s.bottoms, s.tops[0], s.name)
    else:
        g.node("LeakyRelu", s.bottoms, s.tops[0], s.name, alpha=slope)


_SIMPLE = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus",
           "Split": "Identity"}


@converter(*_SIMPLE)
def _simple(g, s):
    for top in s.tops:       # Split has several tops, each a copy
        g.node(_SIMPLE[s.type], s.bottoms, top, s.name)


@converter("Dropout")
def _dropout(g, s):
    # Faster R-CNN's fork (scale_train: false) scales at test time instead of in training.
    scale = getattr(s.layer, "test_scale", 1.0)
    if scale == 1.0:
        g.node("Identity", s.bottoms, s.tops[0], s.name)
    else:
        g.scale(s.bottoms[0], scale, s.tops[0], s.name)


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
