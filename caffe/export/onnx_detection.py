"""ONNX converters for the detection forks' layers that ONNX can express.

Permute (Transpose), Normalize (an L2 norm over channels and maybe space, times the scale),
PriorBox (its output depends on shapes only, so it is exported as a constant), and SSD's
DetectionOutput: the boxes decoded in the graph, NonMaxSuppression per class, keep_top_k by
TopK. (Faster R-CNN's Dropout with scale_train: false is onnx_vision.py's Dropout.)
MultiBoxLoss, SmoothL1Loss, DetectionEvaluate and AnnotatedData (training and data layers)
have no ONNX form and raise ExportError.
"""
import numpy as np

from ..layers.bbox_util import CENTER_SIZE, CORNER, CORNER_SIZE
from .graph import layer_error
from .onnx_builder import converter

INT64, FLOAT, BOOL = 7, 1, 9      # onnx.TensorProto element types, for Cast


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
    # The boxes depend on the shapes alone: the layer computes them now, so that a net
    # exported before its first forward gets its priors, not an empty blob.
    s.layer.forward(s.bottom_blobs, s.top_blobs)
    priors = s.top_blobs[0].data.detach().cpu().numpy()
    g.node("Identity", [g.const(priors, s.name + ".priors")], s.tops[0], s.name)


# -- SSD's DetectionOutput ---------------------------------------------------------------------
def _decode(g, s, prior, var, loc, code_type):
    """bbox_util.decode in ONNX ops, in its order of operations: boxes (..., 4)."""
    hint = s.name + "/decode"

    def op(name, *xs):
        return g.node(name, list(xs), hint=hint)
    offsets = loc if var is None else op("Mul", var, loc)
    if code_type == CORNER:
        return op("Add", prior, offsets)
    x0, y0, x1, y1 = g.split(prior, 4, -1, hint + "/prior")
    pw, ph = op("Sub", x1, x0), op("Sub", y1, y0)
    if code_type == CORNER_SIZE:
        size = g.node("Concat", [pw, ph, pw, ph], hint=hint, axis=-1)
        return op("Add", prior, op("Mul", offsets, size))
    if code_type != CENTER_SIZE:
        raise layer_error(s.layer, f"unknown code_type {code_type}")
    two = g.scalar(2.0)
    px, py = op("Div", op("Add", x0, x1), two), op("Div", op("Add", y0, y1), two)
    v0, v1, v2, v3 = g.split(offsets, 4, -1, hint + "/loc")
    cx, cy = op("Add", op("Mul", v0, pw), px), op("Add", op("Mul", v1, ph), py)
    half_w = op("Div", op("Mul", op("Exp", v2), pw), two)
    half_h = op("Div", op("Mul", op("Exp", v3), ph), two)
    return g.node("Concat", [op("Sub", cx, half_w), op("Sub", cy, half_h),
                             op("Add", cx, half_w), op("Add", cy, half_h)], hint=hint, axis=-1)


def _flags(g, shape, index, axis, hint):
    """A bool tensor of `shape`, true at `index` (TopK's indices along `axis`)."""
    zeros = g.node("Expand", [g.scalar(0.0), shape], hint=hint + "/zeros")
    ones = g.node("Expand", [g.scalar(1.0), g.node("Shape", [index], hint=hint + "/k")],
                  hint=hint + "/ones")
    marked = g.node("ScatterElements", [zeros, index, ones], hint=hint, axis=axis)
    return g.node("Cast", [marked], hint=hint + "/bool", to=BOOL)


def _nms_boxes(g, boxes, hint):
    """The boxes as NonMaxSuppression should see them: the fork gives an inverted box
    (xmax < xmin or ymax < ymin) size 0, so it overlaps nothing; NonMaxSuppression would
    sort its corners instead. Collapsed to a point, it overlaps nothing there either."""
    x0, y0, x1, y1 = g.split(boxes, 4, -1, hint + "/corners")
    bad = g.node("Or", [g.node("Less", [x1, x0], hint=hint + "/bad_x"),
                        g.node("Less", [y1, y0], hint=hint + "/bad_y")], hint=hint + "/bad")
    point = g.node("Concat", [x0, y0, x0, y0], hint=hint + "/point", axis=-1)
    return g.node("Where", [bad, point, boxes], hint=hint)


def _keep_top_k(g, rows, score, keep, hint):
    """The `keep` best rows by score, in their order (ties: the earlier row first, as
    TopK and the layer's stable sort both rank them)."""
    count = g.node("Shape", [score], hint=hint + "/count")
    k = g.node("Min", [count, g.ints([keep], "keep_top_k")], hint=hint + "/k")
    _, index = g.node("TopK", [score, k], hint=hint, n_out=2, axis=0, largest=1, sorted=1)
    return g.node("Compress", [rows, _flags(g, count, index, 0, hint + "/kept")],
                  hint=hint + "/rows", axis=0)


@converter("DetectionOutput")
def _detection_output(g, s):
    layer, p = s.layer, s.layer.param.detection_output_param
    nms = p.nms_param
    if nms.eta < 1 and nms.nms_threshold > 0.5:
        raise layer_error(layer, f"nms_param.eta {nms.eta:g} lowers the overlap threshold "
                                 f"({nms.nms_threshold:g}) after every kept box while it is "
                                 f"above 0.5; ONNX's NonMaxSuppression keeps one threshold")
    n, priors, num_classes = s.bottom_blobs[0].shape[0], layer.num_priors, p.num_classes
    name = s.name
    fallback = g.const([[i] + [-1] * 6 for i in range(n)], name + ".none")
    classes = [c for c in range(num_classes) if c != p.background_label_id]
    g.shapes[s.tops[0]] = [1, 1, "detections", 7]
    if not classes:      # only the background class: never a detection
        g.reshape(fallback, [1, 1, -1, 7], s.tops[0], name)
        return
    k_cls, shared = len(classes), p.share_location
    # Priors and variances: (1, P, 1, 4) each, against the offsets (N, P, L, 4).
    pairs = g.reshape(s.bottoms[2], [2, priors * 4], hint=name + "/pv")
    prior, var = (g.reshape(t, [1, priors, 1, 4], hint=name + "/prior") for t in
                  g.split(pairs, 2, 0, name + "/split"))
    loc = g.reshape(s.bottoms[0], [n, priors, layer.loc_classes, 4], hint=name + "/loc")
    boxes = _decode(g, s, prior, None if p.variance_encoded_in_target else var, loc,
                    p.code_type)
    conf = g.reshape(s.bottoms[1], [n, priors, num_classes], hint=name + "/conf")
    scores = g.node("Transpose", [conf], hint=name + "/scores", perm=[0, 2, 1])
    class_index = g.ints(classes, "classes")
    if k_cls < num_classes:
        scores = g.node("Gather", [scores, class_index], hint=name + "/foreground", axis=1)
    if shared:
        boxes, groups = g.reshape(boxes, [n, priors, 4], hint=name + "/boxes"), k_cls
    else:
        # One NonMaxSuppression batch per (image, class): its own boxes, one class.
        if k_cls < num_classes:
            boxes = g.node("Gather", [boxes, class_index], hint=name + "/foreground", axis=2)
        boxes = g.reshape(g.node("Transpose", [boxes], hint=name + "/by_class",
                                 perm=[0, 2, 1, 3]), [n * k_cls, priors, 4],
                          hint=name + "/boxes")
        scores, groups = g.reshape(scores, [n * k_cls, 1, priors], hint=name + "/scores"), 1
    batch = n if shared else n * k_cls
    top_k = layer.top_k
    limit = priors if top_k < 0 else min(top_k, priors)
    threshold = layer.threshold
    if 0 < top_k < priors:
        # nms_param.top_k limits the boxes NMS considers (the best top_k per class), not
        # the boxes it keeps: the others get score -inf, below any threshold (a score of
        # -inf itself, which the layer would consider with no confidence_threshold, is lost).
        _, best = g.node("TopK", [scores, g.ints([top_k], "top_k")], hint=name + "/top_k",
                         n_out=2, axis=2, largest=1, sorted=1)
        considered = _flags(g, g.ints([batch, groups, priors]), best, 2, name + "/considered")
        scores = g.node("Where", [considered, scores, g.scalar(-np.inf)],
                        hint=name + "/top_k_scores")
        threshold = -np.inf if threshold is None else threshold
    inputs = [_nms_boxes(g, boxes, name + "/nms_boxes"), scores, g.ints([limit], "limit"),
              g.const([min(nms.nms_threshold, 1.0)], name + ".iou")]
    if threshold is not None:
        inputs.append(g.const([threshold], name + ".threshold"))
    # Selected (batch, class, box) triples: by batch, class, then falling score, as the
    # layer lists its rows (by image, label, score) once keep_top_k has chosen.
    chosen = g.node("NonMaxSuppression", inputs, hint=name + "/nms")
    b, c, k = (g.node("Gather", [chosen, g.ints([i], "column")], hint=name + "/chosen",
                      axis=1) for i in range(3))
    score = g.node("GatherND", [scores, chosen], hint=name + "/score")
    box = g.node("GatherND", [boxes, g.node("Concat", [b, k], hint=name + "/box_index",
                                            axis=1)], hint=name + "/box")
    flat = g.node("Add", [g.node("Mul", [b, g.ints([groups])], hint=name + "/flat"), c],
                  hint=name + "/flat")
    image = g.node("Div", [flat, g.ints([k_cls])], hint=name + "/image")
    label = g.node("Gather", [class_index, g.node("Mod", [flat, g.ints([k_cls])],
                                                  hint=name + "/class")],
                   hint=name + "/label", axis=0)
    columns = [g.node("Cast", [image], hint=name + "/image_f", to=FLOAT),
               g.node("Cast", [label], hint=name + "/label_f", to=FLOAT),
               g.node("Unsqueeze", [score, g.ints([1], "axes")], hint=name + "/score_col"),
               box]
    rows = g.node("Concat", columns, hint=name + "/rows", axis=1)
    if p.keep_top_k > -1:
        if n == 1:
            rows = _keep_top_k(g, rows, score, p.keep_top_k, name + "/keep_top_k")
        else:
            parts = []
            for i in range(n):
                mine = g.node("Equal", [g.node("Squeeze", [image, g.ints([1], "axes")],
                                               hint=name + "/image_id"),
                                        g.ints([i], "image")], hint=f"{name}/image{i}")
                parts.append(_keep_top_k(
                    g, g.node("Compress", [rows, mine], hint=f"{name}/rows{i}", axis=0),
                    g.node("Compress", [score, mine], hint=f"{name}/score{i}", axis=0),
                    p.keep_top_k, f"{name}/keep_top_k{i}"))
            rows = g.node("Concat", parts, hint=name + "/rows", axis=0)
    # No detection in any image: one row (image, -1, ..., -1) per image, as the layer.
    count = g.node("Gather", [g.node("Shape", [rows], hint=name + "/shape"), g.ints([0])],
                   hint=name + "/count", axis=0)
    end = g.node("Where", [g.node("Greater", [count, g.ints([0], "zero")], hint=name + "/any"),
                           count, g.ints([n], "images")], hint=name + "/end")
    both = g.node("Concat", [rows, fallback], hint=name + "/with_none", axis=0)
    out = g.node("Slice", [both, g.ints([0], "starts"), end, g.ints([0], "axes")],
                 hint=name + "/out")
    g.reshape(out, [1, 1, -1, 7], s.tops[0], name)
