"""ONNX converters for the forks' segmentation layers and the community layers.

Interp -> (Slice) Resize linear with aligned corners; BN -> Mul, Add with the folded scale and
shift (SegNet's LEARN mode: the batch statistics by ReduceMean); SegNet's Upsample ->
ScatterElements by the pooling mask, YOLO's -> Resize nearest; depthwise convolution -> Conv
with group; ShuffleChannel and Reorg -> Reshape, Transpose, Reshape; Region -> Sigmoid and
Softmax on slices; Axpy -> Mul, Add; the community activations ReLU6, Mish, HardSwish and
HardSigmoid -> ONNX's own operators (Relu/LeakyRelu then Min, Softplus/Tanh/Mul, HardSwish,
HardSigmoid: each the same formula as the layer). SegAccuracy (a metric) and the data layers have no
ONNX form.
"""
import numpy as np

from .graph import layer_error
from .onnx_builder import CONVERTERS, converter
from . import onnx_vision  # noqa: F401  (registers Convolution, which the forks' types reuse)

converter("ConvolutionDepthwise", "DepthwiseConvolution")(CONVERTERS["Convolution"])


@converter("Interp")
def _interp(g, s):
    layer, b = s.layer, s.bottom_blobs[0]
    y0, y1, x0, x1 = layer.crop
    x = s.bottoms[0]
    if (y0, y1, x0, x1) != (0, b.shape[2], 0, b.shape[3]):
        x = g.slice(x, [y0, x0], [y1, x1], [2, 3], hint=s.name + "/crop")
    g.node("Resize", [x, "", "", g.ints(s.top_blobs[0].shape, "sizes")], s.tops[0], s.name,
           mode="linear", coordinate_transformation_mode="align_corners")


def _channel_const(g, values, hint):
    return g.const(values.detach().cpu().numpy().reshape(1, -1, 1, 1), hint)


@converter("BN")
def _bn(g, s):
    layer, x = s.layer, s.bottoms[0]
    if len(s.tops) > 1:
        raise layer_error(layer, "ONNX export takes SegNet's BN with one top")
    scale, shift = (b.data.double() for b in layer.blobs[:2])
    if layer.segnet and not layer.uses_batch:
        a, c = scale, shift
    elif layer.segnet:
        # The batch statistics in float64: var = E[x^2] - E[x]^2 cancels, and onnxruntime's
        # float32 ReduceMean rounds several times more than torch's float32 mean, enough to
        # flip the argmax of a later MAX pooling between near-equal values (SegNet and ENet
        # put its mask into Upsample). In float64 the graph sits closer to the exact
        # statistics than the layer itself, and so to the layer.
        x64 = g.node("Cast", [x], hint=s.name + "/x64", to=11)
        mean = g.reduce_mean(x64, [0, 2, 3], True, hint=s.name + "/mean")
        square = g.node("Mul", [x64, x64], hint=s.name + "/square")
        mean_sq = g.reduce_mean(square, [0, 2, 3], True, hint=s.name + "/mean_sq")
        var = g.node("Sub", [mean_sq, g.node("Mul", [mean, mean], hint=s.name + "/m2")],
                     hint=s.name + "/var")
        eps = g.const(1e-9, s.name + ".eps", np.float64)
        std = g.node("Sqrt", [g.node("Add", [var, eps], hint=s.name + "/eps")],
                     hint=s.name + "/std")
        norm = g.node("Div", [g.node("Sub", [x64, mean], hint=s.name + "/centre"), std],
                      hint=s.name + "/norm64")
        norm = g.node("Cast", [norm], hint=s.name + "/norm", to=1)
        scaled = g.node("Mul", [norm, _channel_const(g, scale, s.name + ".scale")],
                        hint=s.name + "/scale")
        g.node("Add", [scaled, _channel_const(g, shift, s.name + ".shift")], s.tops[0], s.name)
        return
    elif layer.uses_batch:
        raise layer_error(layer, "PSPNet's BN in TRAIN (batch statistics) has no ONNX form: "
                                 "export the TEST net")
    else:
        mean, var = (b.data.double() for b in layer.blobs[2:])
        a = scale / (var + layer.param.bn_param.eps).sqrt()
        c = shift - mean * a
    scaled = g.node("Mul", [x, _channel_const(g, a, s.name + ".a")], hint=s.name + "/scale")
    g.node("Add", [scaled, _channel_const(g, c, s.name + ".b")], s.tops[0], s.name)


@converter("Upsample")
def _upsample(g, s):
    layer, b, top = s.layer, s.bottom_blobs[0], s.top_blobs[0]
    if not layer.unpool:
        sh, sw = layer.scales
        g.node("Resize", [s.bottoms[0], "", g.const([1, 1, sh, sw], s.name + ".scales")],
               s.tops[0], s.name, mode="nearest", coordinate_transformation_mode="asymmetric",
               nearest_mode="floor")
        return
    n, c = b.shape[:2]
    flat = g.reshape(s.bottoms[0], [n, c, -1], hint=s.name + "/x")
    index = g.node("Cast", [g.reshape(s.bottoms[1], [n, c, -1], hint=s.name + "/mask")],
                   hint=s.name + "/index", to=7)
    zeros = g.node("ConstantOfShape", [g.ints([n, c, top.shape[2] * top.shape[3]])],
                   hint=s.name + "/zeros")
    y = g.node("ScatterElements", [zeros, index, flat], hint=s.name + "/scatter", axis=2)
    g.reshape(y, top.shape, s.tops[0], s.name)


def _permute(g, s, view, perm):
    x = g.reshape(s.bottoms[0], view, hint=s.name + "/view")
    t = g.node("Transpose", [x], hint=s.name + "/transpose", perm=list(perm))
    g.reshape(t, s.top_blobs[0].shape, s.tops[0], s.name)


@converter("ShuffleChannel")
def _shuffle_channel(g, s):
    n, c, *rest = s.bottom_blobs[0].shape
    groups = s.layer.param.shuffle_channel_param.group
    _permute(g, s, [n, groups, c // groups] + rest, [0, 2, 1] + list(range(3, 3 + len(rest))))


@converter("Reorg")
def _reorg(g, s):
    p, st = s.layer.param.reorg_param, s.layer.param.reorg_param.stride
    if p.reverse:
        n, c, h, w = s.top_blobs[0].shape
        _permute(g, s, [n, st, st, c // (st * st), h, w], [0, 3, 4, 1, 5, 2])
    else:
        n, c, h, w = s.bottom_blobs[0].shape
        _permute(g, s, [n, c // (st * st), h, st, w, st], [0, 3, 5, 1, 2, 4])


@converter("Region")
def _region(g, s):
    p, b = s.layer.param.region_param, s.bottom_blobs[0]
    n, _, h, w = b.shape
    box, end = s.layer.box, np.iinfo(np.int64).max
    v = g.reshape(s.bottoms[0], [n, p.boxes_of_each_grid, box, h, w], hint=s.name + "/boxes")

    def part(start, stop, op=None, **attrs):
        piece = g.slice(v, [start], [stop], [2], hint=f"{s.name}/{start}")
        return g.node(op, [piece], hint=f"{s.name}/{op}{start}", **attrs) if op else piece
    parts = [part(0, 2, "Sigmoid"), part(2, p.coords), part(p.coords, p.coords + 1, "Sigmoid"),
             part(p.coords + 1, end, "Softmax" if p.softmax else None,
                  **({"axis": 2} if p.softmax else {}))]
    joined = g.node("Concat", parts, hint=s.name + "/concat", axis=2)
    g.reshape(joined, b.shape, s.tops[0], s.name)


@converter("Axpy")
def _axpy(g, s):
    a, x = s.bottom_blobs[0], s.bottom_blobs[1]
    scale = g.reshape(s.bottoms[0], list(a.shape[:2]) + [1] * (x.num_axes - 2),
                      hint=s.name + "/a")
    g.node("Add", [g.node("Mul", [scale, s.bottoms[1]], hint=s.name + "/ax"), s.bottoms[2]],
           s.tops[0], s.name)


# -- community activations (caffe/layers/community.py) ----------------------------------------
@converter("ReLU6")
def _relu6(g, s):
    slope = s.layer.param.relu6_param.negative_slope
    y = g.node("LeakyRelu", s.bottoms, hint=s.name + "/leaky", alpha=slope) if slope else \
        g.node("Relu", s.bottoms, hint=s.name + "/relu")
    # Min, not Clip: with a negative slope the negative side is positive and only 6 bounds it.
    g.node("Min", [y, g.scalar(6.0)], s.tops[0], s.name)


@converter("Mish")
def _mish(g, s):
    x = s.bottoms[0]
    soft = g.node("Softplus", [x], hint=s.name + "/softplus")
    g.node("Mul", [x, g.node("Tanh", [soft], hint=s.name + "/tanh")], s.tops[0], s.name)


@converter("HardSwish")
def _hard_swish(g, s):
    # ONNX's HardSwish is x max(0, min(1, x / 6 + 1 / 2)) = x relu6(x + 3) / 6.
    g.node("HardSwish", s.bottoms, s.tops[0], s.name)


@converter("HardSigmoid")
def _hard_sigmoid(g, s):
    g.node("HardSigmoid", s.bottoms, s.tops[0], s.name, alpha=0.2, beta=0.5)
