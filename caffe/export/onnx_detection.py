"""ONNX converters for the detection forks' layers that ONNX can express.

Permute (Transpose), Normalize (an L2 norm over channels and maybe space, times the scale),
PriorBox (its output depends on shapes only, so it is exported as a constant), and
Faster R-CNN's Dropout with scale_train: false (a multiplication at test time).
DetectionOutput has no ONNX equivalent (NonMaxSuppression selects boxes but does not decode
them, keep the fork's per-image top-k or write its rows), nor have MultiBoxLoss,
SmoothL1Loss, DetectionEvaluate and AnnotatedData (training and data layers); ROIPooling
rounds its ROIs and bins as MaxRoiPool does not promise to; those raise ExportError.
"""
from .onnx_builder import _array, converter
from .onnx_vision import _simple


@converter("Permute")
def _permute(g, s):
    g.node("Transpose", s.bottoms, s.tops[0], s.name, perm=list(s.layer.order))


@converter("Normalize")
def _normalize(g, s):
    layer, x = s.layer, s.bottom_blobs[0]
    p = layer.param.norm_param
    axes = list(range(1, x.num_axes)) if p.across_spatial else [1]
    shape = () if p.channel_shared else (1, x.shape[1]) + (1,) * (x.num_axes - 2)
    sq = g.node("Mul", [s.bottoms[0], s.bottoms[0]], hint=s.name + "/sq")
    norm = g.node("Sqrt", [g.node("Add", [g.reduce_sum(sq, axes, True, hint=s.name + "/sum"),
                                          g.scalar(p.eps, "eps")], hint=s.name + "/eps")],
                  hint=s.name + "/norm")
    unit = g.node("Div", [s.bottoms[0], norm], hint=s.name + "/unit")
    g.node("Mul", [unit, g.blob(layer.blobs[0], s.name + ".scale", shape)], s.tops[0], s.name)


@converter("PriorBox")
def _prior_box(g, s):
    g.node("Identity", [g.const(_array(s.top_blobs[0].data), s.name + ".priors")], s.tops[0],
           s.name)


@converter("Dropout")
def _dropout(g, s):
    scale = getattr(s.layer, "test_scale", 1.0)
    if scale == 1.0:
        _simple(g, s)
    else:
        g.scale(s.bottoms[0], scale, s.tops[0], s.name)


