"""Forks that changed a layer's code but not its parameters, recognised by the net's structure.

Three forks run a BVLC or SSD layer type with other semantics and no field that says so:

* TextBoxes (MhLiao/TextBoxes) doubles every `PriorBox` prior with a copy half a step lower;
* FaceBoxes (sfzhang15/FaceBoxes) tiles its 32 and 64 pixel priors 4 x 4 and 2 x 2 times
  per cell, and draws min_size boxes one pixel smaller;
* ChenYingpeng/darknet2caffe's pooling_layer.cpp (for its YOLO v3 ports) adds one window on
  each axis when kernel - stride is odd, as darknet's max pool keeps the size at stride 1.

Their nets say it only through their shapes: a TextBoxes / FaceBoxes location head predicts
more boxes per cell than SSD's PriorBox makes, and only the YOLO v3 ports have a one-bottom
`Upsample`. `mark_dialects` writes what it finds into each layer's `dialect` field (a pycaffe
field, see caffe.proto), which the layers read; a layer whose `dialect` is already set is left
alone, so a prototxt may also say it. Every other net passes unchanged.
"""
import logging

log = logging.getLogger("caffe")

CONVOLUTIONS = ("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution")
RESHAPING = ("Concat", "Flatten", "Permute", "Reshape")


def prior_ratios(p):
    """SSD's aspect ratios of a PriorBoxParameter: 1 first, then each new one (and 1/r)."""
    ratios = [1.0]
    for r in p.aspect_ratio:
        if all(abs(r - q) >= 1e-6 for q in ratios):
            ratios += [r, 1.0 / r] if p.flip else [r]
    return ratios


def facebox_density(min_size):
    """FaceBoxes' (boxes per axis, shift between them in pixels) for an int min_size."""
    return {32: (4, 8), 64: (2, 16)}.get(min_size, (1, 0))


def priors_per_cell(p, dialect=""):
    """How many priors a PriorBox layer makes per feature-map cell in a dialect."""
    extra = len(prior_ratios(p)) - 1 + (1 if len(p.max_size) else 0)
    if dialect == "faceboxes":
        return sum(facebox_density(int(s))[0] ** 2 + extra for s in p.min_size)
    base = len(p.min_size) * (1 + extra)
    return 2 * base if dialect == "textboxes" else base


def _location_heads(layers):
    """{blob: num_output} of the convolutions whose outputs reach a DetectionOutput's or
    MultiBoxLoss's location bottom (locations shared by the classes) through Concat / Flatten /
    Permute / Reshape layers."""
    heads = {}
    for i, layer in enumerate(layers):
        if layer.type not in ("DetectionOutput", "MultiBoxLoss") or not layer.bottom:
            continue
        shared = layer.detection_output_param.share_location \
            if layer.type == "DetectionOutput" else layer.multibox_loss_param.share_location
        if not shared:      # per-class locations: the count says nothing about the priors
            continue
        todo = [(i, layer.bottom[0])]
        while todo:
            at, blob = todo.pop()
            j = next((k for k in range(at - 1, -1, -1) if blob in layers[k].top), None)
            if j is None:
                continue
            src = layers[j]
            if src.type in RESHAPING:
                todo += [(j, b) for b in src.bottom]
            elif src.type in CONVOLUTIONS and src.bottom:
                heads[src.bottom[0]] = src.convolution_param.num_output
    return heads


def _prior_dialect(layers):
    heads = _location_heads(layers)
    for layer in layers:
        if layer.type != "PriorBox" or not layer.bottom or layer.bottom[0] not in heads:
            continue
        p, outputs = layer.prior_box_param, heads[layer.bottom[0]]
        if outputs % 4 or outputs // 4 == priors_per_cell(p):
            continue
        for dialect in ("textboxes", "faceboxes"):
            if outputs // 4 == priors_per_cell(p, dialect):
                return dialect, layer.name
    return None, None


def _darknet_pool(p):
    """Whether darknet2caffe's pooling adds a window: kernel_h - stride_h odd, as the fork
    tests it, at stride 1, the case it was written for (darknet's stride-1 max pool keeps the
    size). Its rule would also move pools of stride 2 (ResNet's 3 x 3 one), which its YOLO
    ports do not have and other YOLO v3 ports' backbones do; global pooling keeps BVLC's."""
    if p.global_pooling:
        return False
    kernel = p.kernel_h if p.HasField("kernel_h") else p.kernel_size
    stride = p.stride_h if p.HasField("stride_h") else p.stride
    return stride == 1 and (kernel - stride) % 2 == 1


def mark_dialects(param):
    """Set `dialect` on the layers of a NetParameter (in place) whose fork the net reveals."""
    layers = param.layer
    dialect, witness = _prior_dialect(layers)
    if dialect:
        log.info("PriorBox layers follow %s (layer '%s' predicts its number of boxes)",
                 dialect, witness)
        for layer in layers:
            if layer.type == "PriorBox" and not layer.dialect:
                layer.dialect = dialect
    if any(layer.type == "Upsample" and len(layer.bottom) == 1 for layer in layers):
        for layer in layers:
            if layer.type == "Pooling" and not layer.dialect and \
                    _darknet_pool(layer.pooling_param):
                log.info("Pooling layer '%s' follows darknet2caffe (a YOLO v3 port): one more "
                         "window per axis", layer.name)
                layer.dialect = "darknet2caffe"
    return param
