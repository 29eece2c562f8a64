"""The forks' binary dialects: their LayerParameter field numbers, renumbered by layer type.

PSPNet, SegNet and CRF-RNN each added layer parameters to caffe.proto with numbers that
BVLC later gave to other fields (PSPNet's interp_param and BVLC's input_param are both 143)
or that another fork gave to another message (PSPNet's bn_param is 152, SegNet's is 45, with
a different BNParameter).  One schema cannot hold both numberings, but a parameter only
means something to its own layer type: a layer of type "Interp" carries field 143 only as
PSPNet's interp_param.  So caffe.proto gives the clashing fields private numbers (2xxxx) and
this module rewrites the wire bytes of each layer, by its type, when a binary NetParameter
is read (the fork's number -> ours) or written (ours -> the fork's), so that the forks'
.caffemodel files load here and ours load in the forks.

Dialect-wide fields, whose layer types BVLC shares (SegNet's loss_param.weight_by_label_freqs
is 3 like BVLC's normalization), are renumbered only in a file that holds a SegNet layer.
See docs/forks/segmentation.md for the table.
"""
from google.protobuf.internal import decoder, encoder

# LayerParameter fields
_TYPE, _TRANSFORM, _LOSS, _DROPOUT = 2, 100, 101, 108
_NET_LAYER = 100  # NetParameter.layer

# type -> {number on disk: (our number, {inner number on disk: our inner number})}
LAYER_FIELDS = {
    "Interp": {143: (20143, {})},
    "SegAccuracy": {144: (20144, {})},
    "MatWrite": {145: (20145, {})},
    "DenseCRF": {146: (20146, {})},
    "DomainTransform": {147: (20147, {})},
    "AdaptiveBiasChannel": {148: (20148, {})},
    "ImageSegData": {_TRANSFORM: (_TRANSFORM, {8: 20008, 9: 20009, 10: 20010})},
    "MultiStageMeanfield": {146: (21146, {})},
    # SegNet's (137; to_disk writes a layer's first listed number), then the YOLO v3 ports':
    # ChenYingpeng/darknet2caffe 149, eric612/MobileNet-YOLO 150 (field 1, scale, alike).
    "Upsample": {137: (22137, {}), 149: (22137, {}), 150: (22137, {})},
    "DenseImageData": {138: (22138, {})},
    # SegNet's BN (PSPNet's is 152 on disk and here, with the same inner numbers).
    "BN": {45: (152, {1: 22001, 2: 22002, 3: 22003})},
    # OpenCV's Proposal: 201 is SSD's multibox_loss_param here.
    "Proposal": {201: (23201, {})},
    # The community layers' own numbers (docs/forks/community.md).
    "Reorg": {159: (159, {}), 149: (159, {})},          # OpenCV's ports; eric612's
    "ReLU6": {211: (24211, {}), 100000: (24211, {})},   # eric612; the Caffe-ReLU6 ports
    "Mish": {150: (24150, {})},                         # ChenYingpeng/darknet2caffe
    "YoloDetectionOutput": {601: (24601, {})},          # eric612/MobileNet-YOLO
    "Yolov3DetectionOutput": {602: (24602, {})},        # eric612/MobileNet-YOLO
    # The OCR forks: senlinuc/caffe_ocr first, then tianzhi0549/CTPN's caffe.
    "Transpose": {8266710: (24710, {}), 142: (24710, {})},
    "Reverse": {160: (24160, {}), 143: (24160, {})},
    "Lstm": {8266711: (24140, {}), 140: (24140, {})},
    "CTCGreedyDecoder": {158: (24158, {})},
    "DenseBlock": {147: (24147, {})},                   # BVLC's swish_param is 147
}
SEGNET_MARKS = {"BN": 45, "Upsample": 137, "DenseImageData": 138}
SEGNET_FIELDS = {_LOSS: {3: 22103}, _DROPOUT: {2: 22202}}
_BN_MODE, _SEGNET_BN = 22003, 45


def _fields(buf):
    """(number, wire type, start of key, start of payload, end) for each field of buf."""
    pos, end = 0, len(buf)
    while pos < end:
        key, start = decoder._DecodeVarint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            _, stop = decoder._DecodeVarint(buf, start)
        elif wire == 1:
            stop = start + 8
        elif wire == 2:
            size, start = decoder._DecodeVarint(buf, start)
            stop = start + size
        elif wire == 5:
            stop = start + 4
        else:  # groups: Caffe's schema has none; leave the bytes to the parser's error
            raise ValueError("group field")
        if stop > end:
            raise ValueError("truncated")
        yield number, wire, pos, start, stop
        pos = stop


def _key(number, wire):
    return encoder._VarintBytes(number << 3 | wire)


def _delimited(number, payload):
    return _key(number, 2) + encoder._VarintBytes(len(payload)) + payload


def _renumber(buf, mapping, extra=b""):
    """buf with its top-level fields renumbered by mapping {old: (new, inner mapping)}."""
    out = []
    for number, wire, key_at, start, stop in _fields(buf):
        if number not in mapping:
            out.append(buf[key_at:stop])
            continue
        new, inner = mapping[number]
        if wire == 2:
            payload = buf[start:stop]
            if inner:
                payload = _renumber(payload, {k: (v, {}) for k, v in inner.items()})
            out.append(_delimited(new, payload))
        else:
            out.append(_key(new, wire) + buf[start:stop])
    return b"".join(out) + extra


def _layer_type(buf):
    for number, wire, _, start, stop in _fields(buf):
        if number == _TYPE and wire == 2:
            return bytes(buf[start:stop]).decode("utf-8", "replace")
    return ""


def _layers(net):
    """(type, layer bytes or None for a non-layer field, raw field bytes) of a NetParameter."""
    for number, wire, key_at, start, stop in _fields(net):
        layer = net[start:stop] if number == _NET_LAYER and wire == 2 else None
        yield (_layer_type(layer) if layer is not None else None), layer, net[key_at:stop]


def _has_field(buf, wanted):
    return any(number == wanted for number, *_ in _fields(buf))


def _read_layer(kind, layer, segnet):
    mapping = dict(LAYER_FIELDS.get(kind, {}))
    if segnet:
        for field, inner in SEGNET_FIELDS.items():
            mapping.setdefault(field, (field, inner))
    if not mapping:
        return layer
    out = _renumber(layer, mapping)
    if kind == "BN" and _has_field(layer, _SEGNET_BN):
        bn = next(out[s:e] for n, _, _, s, e in _fields(out) if n == 152)
        if not _has_field(bn, _BN_MODE):
            # Mark the layer as SegNet's even when its bn_param is empty (bn_mode LEARN):
            # a second occurrence of a message field merges into the first.
            out += _delimited(152, _key(_BN_MODE, 0) + b"\0")
    return out


def to_canonical(data):
    """Binary NetParameter bytes with the forks' numbers -> bytes for caffe_pb2.

    Bytes that are not a well-formed message come back unchanged, for the parser to reject.
    """
    try:
        items = list(_layers(data))
        segnet = any(layer is not None and kind in SEGNET_MARKS
                     and _has_field(layer, SEGNET_MARKS[kind]) for kind, layer, _ in items)
        if not any(layer is not None and (kind in LAYER_FIELDS or segnet)
                   for kind, layer, _ in items):
            return data
        return b"".join(raw if layer is None else
                        _delimited(_NET_LAYER, _read_layer(kind, layer, segnet))
                        for kind, layer, raw in items)
    except (ValueError, IndexError):
        return data


def _is_segnet_layer(param):
    if param.type == "BN":
        bn = param.bn_param
        return any(bn.HasField(f) for f in ("bn_mode", "scale_filler", "shift_filler"))
    return param.type in ("Upsample", "DenseImageData") and param.HasField(
        {"Upsample": "upsample_param", "DenseImageData": "dense_image_data_param"}[param.type])


def is_segnet(net_param):
    """Whether a NetParameter is SegNet's dialect (holds a layer only SegNet's schema has)."""
    return any(_is_segnet_layer(lp) for lp in net_param.layer)


def _reverse(mapping):
    return {new: (old, {v: k for k, v in inner.items()}) for old, (new, inner) in mapping.items()}


def to_disk(net_param):
    """Serialize a NetParameter with each fork layer's parameters at its fork's numbers."""
    segnet = is_segnet(net_param)
    out = []
    for lp in net_param.layer:
        layer = lp.SerializeToString()
        mapping = {}
        for old, (new, inner) in LAYER_FIELDS.get(lp.type, {}).items():
            if lp.type == "BN" and not _is_segnet_layer(lp):
                continue  # PSPNet's BN: 152 on disk as here
            mapping.setdefault(new, (old, {v: k for k, v in inner.items()}))
        if segnet:
            for field, inner in SEGNET_FIELDS.items():
                mapping.setdefault(field, (field, {v: k for k, v in inner.items()}))
        out.append(_delimited(_NET_LAYER, _renumber(layer, mapping) if mapping else layer))
    rest = type(net_param)()
    rest.CopyFrom(net_param)
    del rest.layer[:]
    return rest.SerializeToString() + b"".join(out)
