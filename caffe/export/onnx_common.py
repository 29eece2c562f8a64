"""ONNX converters for the common layers (affine, normalization, shape, reduction), and the
recurrent ones, whose unrolled inner net is emitted in their place."""
import numpy as np

from .graph import plan_recurrent
from .onnx_builder import convert_step, converter
from .shapes import broadcast_shape


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
    gates = g.split(x, 4, 2, s.name + "/gates")
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
    # export that net's layers in its place.
    plan = plan_recurrent(s, g.namer,
                          lambda name, blob: g.const(np.zeros(blob.shape), f"{s.name}.{name}"))
    for step in plan.steps:
        convert_step(g, step)
    for top, (_, value, _) in zip(s.tops, plan.outputs):
        g.node("Identity", [value], top, s.name + "/out")
