"""ONNX converters for the two-stage detectors' region layers.

ROIPooling -> MaxRoiPool (its ROI rounding and floor / ceil bins are Caffe's); PSROIPooling ->
an integral image (CumSum in float64, as the layer sums) read at each bin's corners by
GatherND; OpenCV's Proposal -> anchors as a constant, the deltas applied in the graph,
TopK (pre_nms_topn) and NonMaxSuppression (post_nms_topn). py-faster-rcnn's proposal layer
is a Python layer: arbitrary code, refused by the net walk.
"""
import numpy as np

from .onnx_builder import converter
from .shapes import FLT_MIN

INT64, FLOAT, DOUBLE = 7, 1, 11      # onnx.TensorProto element types, for Cast


def _f64(g, value):
    return g.const(value, "f64", np.float64, key=("f64", float(value)))


def _i64(g, value):
    """A rank-0 int64 constant (Clip's bounds must be scalars)."""
    return g.const(value, "i64", np.int64, key=("i64", int(value)))


@converter("ROIPooling")
def _roi_pooling(g, s):
    p, (n, _, h, w) = s.layer.param.roi_pooling_param, s.bottom_blobs[0].shape
    name = s.name
    rois = g.reshape(s.bottoms[1], [-1, 5], hint=name + "/rois")

    def pool(x, hint):
        return g.node("MaxRoiPool", [x, rois], hint=hint, pooled_shape=[p.pooled_h, p.pooled_w],
                      spatial_scale=p.spatial_scale)
    # Caffe starts each bin's maximum at -FLT_MAX; ONNX leaves it open, and older
    # onnxruntime kernels start it at FLT_MIN (the least positive float), so that a bin of
    # values <= 0 reads FLT_MIN (1.32 starts lower). The graph pools the positive part as
    # it is and the negative part as reciprocals (their maximum is 1 / the least magnitude:
    # exact within one rounding); a pooled plane of ones tells the empty bins, which give 0.
    x = s.bottoms[0]
    positive = pool(g.node("Relu", [x], hint=name + "/positive"), name + "/max_positive")
    magnitude = g.node("Relu", [g.node("Neg", [x], hint=name + "/neg")], hint=name + "/magnitude")
    inverse = pool(g.node("Reciprocal", [magnitude], hint=name + "/inverse"),
                   name + "/max_inverse")
    negative = g.node("Neg", [g.node("Reciprocal", [inverse], hint=name + "/least")],
                      hint=name + "/max_negative")
    ones = g.node("Expand", [g.scalar(1.0), g.ints([n, 1, h, w])], hint=name + "/ones")
    filled = g.node("Greater", [pool(ones, name + "/filled"), g.scalar(0.5)],
                    hint=name + "/nonempty")
    above = g.node("Greater", [positive, g.scalar(FLT_MIN)], hint=name + "/above_zero")
    best = g.node("Where", [above, positive, negative], hint=name + "/max")
    g.node("Where", [filled, best, g.scalar(0.0)], s.tops[0], name)


def _c_round(g, x, hint):
    """C's round() (halves away from zero; ONNX's Round takes them to even)."""
    return g.node("Mul", [g.node("Sign", [x], hint=hint + "/sign"),
                          g.node("Floor", [g.node("Add", [g.node("Abs", [x], hint=hint + "/abs"),
                                                          _f64(g, 0.5)],
                                                  hint=hint + "/half")], hint=hint + "/floor")],
                  hint=hint)


def _column(g, x, i, hint):
    return g.node("Gather", [x, g.ints([i], "column")], hint=hint, axis=1)


@converter("PSROIPooling")
def _psroi_pooling(g, s):
    p, (h, w) = s.layer.param.psroi_pooling_param, s.bottom_blobs[0].shape[2:]
    name, size, dim = s.name, p.group_size, p.output_dim
    count = s.top_blobs[0].shape[0]
    rois = g.reshape(s.bottoms[1], [count, 5], hint=name + "/rois")
    items = g.node("Cast", [_column(g, rois, 0, name + "/item")], hint=name + "/items", to=INT64)
    # The fork's float32 bin arithmetic on the rounded ROI (rounded in float64, as the layer).
    rounded = _c_round(g, g.node("Cast", [rois], hint=name + "/f64", to=DOUBLE), name + "/round")
    scale = g.scalar(p.spatial_scale, "spatial_scale")
    one = _f64(g, 1.0)
    steps = g.const(np.arange(size), name + ".k")
    edges = []
    for axis, limit in ((2, h), (1, w)):      # rows from y1, y2; columns from x1, x2
        start = g.node("Mul", [g.node("Cast", [_column(g, rounded, axis, name + "/lo")],
                                      hint=name + "/lo32", to=FLOAT), scale], hint=name + "/start")
        end = g.node("Mul", [g.node("Cast", [g.node("Add", [_column(g, rounded, axis + 2,
                                                                    name + "/hi"), one],
                                                    hint=name + "/hi1")],
                                    hint=name + "/hi32", to=FLOAT), scale], hint=name + "/end")
        extent = g.node("Max", [g.node("Sub", [end, start], hint=name + "/extent"),
                                g.scalar(np.float32(0.1))], hint=name + "/extent_min")
        bin_size = g.node("Div", [extent, g.scalar(float(size))], hint=name + "/bin")
        for k, rounding in ((steps, "Floor"), (g.node("Add", [steps, g.scalar(1.0)],
                                                      hint=name + "/k1"), "Ceil")):
            edge = g.node(rounding, [g.node("Add", [g.node("Mul", [k, bin_size],
                                                           hint=name + "/kbin"), start],
                                            hint=name + "/edge")], hint=name + "/" + rounding)
            edges.append(g.node("Clip", [g.node("Cast", [edge], hint=name + "/edge_i", to=INT64),
                                         _i64(g, 0), _i64(g, limit)],
                                hint=name + "/clip"))
    h0, h1, w0, w1 = edges                    # (R, G) each
    shape = g.ints([count, dim, size, size], "pooled_shape")

    def spread(t, view, hint):
        return g.node("Expand", [g.reshape(t, view, hint=hint), shape], hint=hint + "/expand")
    items = spread(items, [count, 1, 1, 1], name + "/items")
    channels = g.const(((np.arange(dim)[:, None, None] * size + np.arange(size)[:, None]) * size
                        + np.arange(size)).reshape(1, dim, size, size), name + ".channels",
                       np.int64)
    channels = g.node("Expand", [channels, shape], hint=name + "/channels")
    rows = [spread(t, [count, 1, size, 1], name + "/rows") for t in (h0, h1)]
    cols = [spread(t, [count, 1, 1, size], name + "/cols") for t in (w0, w1)]
    # The layer's integral image: float64 running sums over rows then columns, a zero
    # row and column in front.
    running = g.node("Cast", [s.bottoms[0]], hint=name + "/x64", to=DOUBLE)
    for axis in (2, 3):
        running = g.node("CumSum", [running, _i64(g, axis)], hint=name + "/running")
    integral = g.node("Pad", [running, g.ints([0, 0, 1, 1, 0, 0, 0, 0], "pads"), _f64(g, 0.0)],
                      hint=name + "/integral", mode="constant")

    def corner(hh, ww):
        index = g.node("Concat", [g.node("Unsqueeze", [t, g.ints([-1], "axes")],
                                         hint=name + "/index") for t in
                                  (items, channels, hh, ww)], hint=name + "/corner", axis=-1)
        return g.node("GatherND", [integral, index], hint=name + "/read")
    (a, b), (cc, d) = (corner(rows[1], cols[1]), corner(rows[0], cols[1])), \
        (corner(rows[1], cols[0]), corner(rows[0], cols[0]))
    sums = g.node("Add", [g.node("Sub", [g.node("Sub", [a, b], hint=name + "/s1"), cc],
                                 hint=name + "/s2"), d], hint=name + "/sums")
    sums = g.node("Cast", [sums], hint=name + "/sums32", to=FLOAT)
    zero = _i64(g, 0)
    area = g.node("Mul", [g.node("Max", [g.node("Sub", [rows[1], rows[0]], hint=name + "/bh"),
                                         zero], hint=name + "/bh0"),
                          g.node("Max", [g.node("Sub", [cols[1], cols[0]], hint=name + "/bw"),
                                         zero], hint=name + "/bw0")], hint=name + "/area")
    area = g.node("Cast", [area], hint=name + "/area32", to=FLOAT)
    mean = g.node("Div", [sums, g.node("Max", [area, g.scalar(1.0)], hint=name + "/area1")],
                  hint=name + "/mean")
    g.node("Where", [g.node("Greater", [area, g.scalar(0.0)], hint=name + "/filled"), mean,
                     g.scalar(0.0)], s.tops[0], name)


@converter("Proposal")
def _proposal(g, s):
    layer, p = s.layer, s.layer.param.proposal_param
    name, a = s.name, layer.num_anchors
    _, _, height, width = s.bottom_blobs[0].shape
    count, post = height * width * a, p.post_nms_topn
    # Objectness (the second half of the channels) and deltas, cell by cell, anchor by anchor.
    scores = g.reshape(g.node("Transpose", [g.slice(s.bottoms[0], [a], [2 * a], [1],
                                                    hint=name + "/objectness")],
                              hint=name + "/cells", perm=[0, 2, 3, 1]), [count],
                       hint=name + "/scores")
    deltas = g.reshape(g.node("Transpose", [s.bottoms[1]], hint=name + "/cell_deltas",
                              perm=[0, 2, 3, 1]), [count, 4], hint=name + "/deltas")
    anchors = layer.anchors(height, width).numpy()
    ax0, ay0, ax1, ay1 = (g.const(anchors[:, i:i + 1], f"{name}.anchor{i}") for i in range(4))
    d0, d1, d2, d3 = g.split(deltas, 4, 1, name + "/delta")

    def op(kind, *xs):
        return g.node(kind, list(xs), hint=name + "/box")
    one, half = g.scalar(1.0), g.scalar(0.5)
    pw, ph = op("Add", op("Sub", ax1, ax0), one), op("Add", op("Sub", ay1, ay0), one)
    px, py = op("Add", ax0, op("Mul", pw, half)), op("Add", ay0, op("Mul", ph, half))
    cx, cy = op("Add", op("Mul", d0, pw), px), op("Add", op("Mul", d1, ph), py)
    half_w, half_h = op("Mul", op("Mul", op("Exp", d2), pw), half), \
        op("Mul", op("Mul", op("Exp", d3), ph), half)
    # Clipped to the image OpenCV makes of im_info: int(rows) x int(cols) pixels.
    info = g.node("Cast", [g.node("Cast", [g.reshape(s.bottoms[2], [-1], hint=name + "/info")],
                                  hint=name + "/pixels", to=INT64)], hint=name + "/info_f",
                  to=FLOAT)
    last = op("Sub", info, one)
    ymax, xmax = (g.node("Gather", [last, g.ints([i], "index")], hint=name + "/limit")
                  for i in (0, 1))

    def clip(x, limit):
        return op("Min", op("Max", x, g.scalar(0.0)), limit)
    boxes = g.node("Concat", [clip(op("Sub", cx, half_w), xmax), clip(op("Sub", cy, half_h), ymax),
                              clip(op("Add", cx, half_w), xmax), clip(op("Add", cy, half_h), ymax)],
                   hint=name + "/boxes", axis=1)
    # The best pre_nms_topn by objectness, then NMS over them, keeping post_nms_topn.
    k = min(p.pre_nms_topn, count)
    best_scores, best = g.node("TopK", [scores, g.ints([k], "pre_nms_topn")], hint=name + "/best",
                               n_out=2, axis=0, largest=1, sorted=1)
    best_boxes = g.node("Gather", [boxes, best], hint=name + "/best_boxes", axis=0)
    # The layer counts pixels (width x2 - x1 + 1): NonMaxSuppression measures x2 - x1, so it
    # sees the far corners one pixel further.
    far = g.node("Add", [best_boxes, g.const([[0, 0, 1, 1]], name + ".far")], hint=name + "/far")
    chosen = g.node("NonMaxSuppression",
                    [g.node("Unsqueeze", [far, g.ints([0], "axes")], hint=name + "/nms_boxes"),
                     g.reshape(best_scores, [1, 1, k], hint=name + "/nms_scores"),
                     g.ints([post], "post_nms_topn"), g.const([min(p.nms_thresh, 1.0)],
                                                              name + ".iou")],
                    hint=name + "/nms")
    kept = g.node("Squeeze", [g.node("Gather", [chosen, g.ints([2], "column")], hint=name + "/k",
                                     axis=1), g.ints([1], "axes")], hint=name + "/kept")
    rows = g.node("Gather", [best_boxes, kept], hint=name + "/rows", axis=0)
    shown = g.node("Gather", [best_scores, kept], hint=name + "/kept_scores", axis=0)
    # Zero rows after the kept boxes, up to post_nms_topn: (0, x1, y1, x2, y2) and (score).
    found = g.node("Shape", [kept], hint=name + "/found")
    missing = g.node("Sub", [g.ints([post], "post_nms_topn"), found], hint=name + "/missing")
    pads = g.node("Concat", [g.ints([0, 0]), missing, g.ints([0])], hint=name + "/pads", axis=0)
    item_shape = g.node("Concat", [found, g.ints([1])], hint=name + "/item_shape", axis=0)
    items = g.node("Expand", [g.scalar(0.0), item_shape], hint=name + "/items")
    rois = g.node("Concat", [items, rows], hint=name + "/rois", axis=1)
    g.node("Pad", [rois, pads, g.scalar(0.0)], s.tops[0], name, mode="constant")
    if len(s.tops) > 1:
        column = g.node("Unsqueeze", [shown, g.ints([1], "axes")], hint=name + "/score_col")
        g.node("Pad", [column, pads, g.scalar(0.0)], s.tops[1], name + "/scores_out",
               mode="constant")
