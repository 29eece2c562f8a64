"""The forks' binary dialects: their LayerParameter field numbers, renumbered by layer type.

Every fork and community port added layer parameters to caffe.proto at numbers of its own.
Some clash with BVLC's (PSPNet's interp_param and BVLC's input_param are both 143), some with
another fork's (PSPNet's bn_param is 152, SegNet's is 45, with a different BNParameter;
OpenCV's proposal_param is SSD's multibox_loss_param, 201), and any of them may hold something
else in a file of a fork nobody here knows (CaffeOnSpark writes a string at 10001, R-FCN's
psroi_pooling_param). BVLC Caffe skips a field it does not know; the rule here is that every
file BVLC reads, pycaffe reads. A parameter only means something to its own layer type, so:

* caffe.proto gives every fork field a private number (2xxxx) that never reaches a file;
* LAYER_FIELDS below says, per layer type, which number on disk is which of ours. Reading a
  binary NetParameter (to_canonical) renumbers each layer's fields by its type; writing
  (to_disk) puts them back at the fork's numbers. A fork number in a layer of another type
  stays at its number, unknown to the schema, and is skipped with one WARNING naming the layer
  and the field (unknown_fields), as BVLC skips it;
* a field that still does not parse (a fork's message at a number another fork gave to a
  message of another shape) is dropped with the same WARNING (drop_unparsable), never a
  refusal of the whole file.

Table entries: ``LAYER_FIELDS[type][number on disk] = (our number, {inner number on disk: our
inner number})``; the inner mapping renumbers fields inside that parameter's message (SegNet's
BNParameter). To add a fork's field: give it a private number in caffe.proto (20000-29999,
grouped by fork; never 19000-19999, which protobuf reserves), add its layer types here, and
its row to docs/forks/*.md. When several types share a field, list each type.

Dialect-wide fields, whose layer types BVLC shares (SegNet's loss_param.weight_by_label_freqs
is 3 like BVLC's normalization), are renumbered only in a file that holds a SegNet layer.
See docs/forks/segmentation.md and docs/forks/detection.md for the tables.
"""
import logging

from google.protobuf import message
from google.protobuf.internal import decoder, encoder

from . import caffe_pb2
from .compat import is_repeated

log = logging.getLogger("caffe")

# LayerParameter fields
_NAME, _TYPE, _BLOBS, _TRANSFORM, _LOSS, _DROPOUT = 1, 2, 7, 100, 101, 108
_NET_LAYER = 100  # NetParameter.layer

# type -> {number on disk: (our number, {inner number on disk: our inner number})}
LAYER_FIELDS = {
    # hszhao/PSPNet (DeepLab v2's layers)
    "Interp": {143: (20143, {})},
    "SegAccuracy": {144: (20144, {})},
    "MatWrite": {145: (20145, {})},
    "DenseCRF": {146: (20146, {})},
    "DomainTransform": {147: (20147, {})},
    "AdaptiveBiasChannel": {148: (20148, {})},
    "BiasChannel": {149: (20149, {})},
    "UniqueLabel": {150: (20150, {})},
    "MatRead": {151: (20151, {})},
    "ImageSegData": {_TRANSFORM: (_TRANSFORM, {8: 20008, 9: 20009, 10: 20010})},
    # PSPNet's BN at 152, SegNet's at 45 with its own inner numbers (PSPNet's first: it is
    # the number written for a BN layer that is not SegNet's).
    "BN": {152: (20152, {}), 45: (20152, {1: 22001, 2: 22002, 3: 22003})},
    # torrvision/caffe (CRF-RNN)
    "MultiStageMeanfield": {146: (21146, {})},
    # alexgkendall/caffe-segnet (137, written: a type's first number is the one written), then
    # the YOLO v3 ports' one-bottom Upsample: ChenYingpeng/darknet2caffe 149,
    # eric612/MobileNet-YOLO 150 (field 1, scale, alike)
    "Upsample": {137: (22137, {}), 149: (22137, {}), 150: (22137, {})},
    "DenseImageData": {138: (22138, {})},
    # Community layers: ShuffleNet's ShuffleChannel, the YOLO v2 ports' Reorg, OpenCV's
    # Proposal (201 is SSD's multibox_loss_param).
    "ShuffleChannel": {164: (23164, {})},
    "Reorg": {159: (23159, {}), 149: (23159, {})},
    "Proposal": {201: (23201, {})},
    # daijifeng001/caffe-rfcn
    "PSROIPooling": {10001: (24001, {})},
    # weiliu89/caffe (SSD)
    "AnnotatedData": {200: (25200, {})},
    "MultiBoxLoss": {201: (25201, {})},
    "Permute": {202: (25202, {})},
    "PriorBox": {203: (25203, {})},
    "DetectionOutput": {204: (25204, {})},
    "DetectionEvaluate": {205: (25205, {})},
    "Normalize": {206: (25206, {})},
    "VideoData": {207: (25207, {})},
    # rbgirshick/caffe-fast-rcnn
    "ROIPooling": {8266711: (26711, {})},
    "SmoothL1Loss": {8266712: (26712, {})},
    # The community ports' (docs/forks/community.md); eric612/MobileNet-YOLO's Reorg is 149.
    "ReLU6": {211: (27211, {}), 100000: (27211, {})},   # eric612; the Caffe-ReLU6 ports
    "Mish": {150: (27150, {})},                         # ChenYingpeng/darknet2caffe
    "YoloDetectionOutput": {601: (27601, {})},          # eric612/MobileNet-YOLO
    "Yolov3DetectionOutput": {602: (27602, {})},        # eric612/MobileNet-YOLO
    # The OCR forks: senlinuc/caffe_ocr first, then tianzhi0549/CTPN's caffe.
    "Transpose": {8266710: (28710, {}), 142: (28710, {})},
    "Reverse": {160: (28160, {}), 143: (28160, {})},
    "Lstm": {8266711: (28140, {}), 140: (28140, {})},
    "CTCGreedyDecoder": {158: (28158, {})},
    "DenseBlock": {147: (28147, {})},                   # BVLC's swish_param is 147
}
SEGNET_MARKS = {"BN": 45, "Upsample": 137, "DenseImageData": 138}
SEGNET_FIELDS = {_LOSS: {3: 22103}, _DROPOUT: {2: 22202}}
_BN_PARAM, _BN_MODE, _SEGNET_BN = 20152, 22003, 45


def _home_numbers():
    """our number -> (number on disk, {}): where a private field goes in a layer whose type
    the table does not list for it (its fork's number; BVLC and the fork skip it there)."""
    home = {}
    for fields in LAYER_FIELDS.values():
        for disk, (ours, _) in fields.items():
            if ours != disk:
                home.setdefault(ours, (disk, {}))
    return home


HOME = _home_numbers()


def _fields(buf):
    """(number, wire type, start of key, start of payload, end) for each field of buf."""
    pos, end = 0, len(buf)
    while pos < end:
        # One-byte keys and lengths (the common case) read directly: bombs are millions of
        # tiny records, and this loop bounds the time spent on them.
        key = buf[pos]
        start = pos + 1 if key < 128 else None
        if start is None:
            key, start = decoder._DecodeVarint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            stop = start
            while buf[stop] & 128:
                stop += 1
            stop += 1
        elif wire == 1:
            stop = start + 8
        elif wire == 2:
            size = buf[start]
            if size < 128:
                start += 1
            else:
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
        bn = next(out[s:e] for n, _, _, s, e in _fields(out) if n == _BN_PARAM)
        if not _has_field(bn, _BN_MODE):
            # Mark the layer as SegNet's even when its bn_param is empty (bn_mode LEARN):
            # a second occurrence of a message field merges into the first.
            out += _delimited(_BN_PARAM, _key(_BN_MODE, 0) + b"\0")
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
            out = data
        else:
            out = b"".join(raw if layer is None else
                           _delimited(_NET_LAYER, _read_layer(kind, layer, segnet))
                           for kind, layer, raw in items)
        return out
    except (ValueError, IndexError, message.DecodeError):
        return data


class _Enough(Exception):
    pass


def measure(data, descriptor, max_layers, max_records):
    """(layers, records, unknown) of a binary message, counted without parsing and only as
    far as a limit is passed: layers are NetParameter's layer records (V2 and V1, at any
    depth: a solver's net_param holds some), records every length-delimited field at any
    depth (message, string, packed array: what costs memory when parsed), unknown the
    (layer name, type, field number) of each layer field that no table gives that layer's
    type (see unknown_fields). Fork fields count by their layer's type. None when the bytes
    are not a well-formed message."""
    counts = [0, 0, max_layers, max_records]
    unknown = []
    try:
        _measure(memoryview(data), descriptor, None, counts, unknown)  # slices copy nothing
    except _Enough:
        pass
    except (ValueError, IndexError, message.DecodeError):
        return None
    return counts[0], counts[1], unknown


def _measure(buf, descriptor, layer, counts, unknown):
    """Count buf's records into counts; `layer`: None, or buf is a layer of that type."""
    fields, net = descriptor.fields_by_number, descriptor.name == "NetParameter"
    mapping = LAYER_FIELDS.get(layer, {}) if layer is not None else {}
    name, strange = "", []
    for number, wire, _, start, stop in _fields(buf):
        field = fields.get(mapping.get(number, (number,))[0])
        if layer is not None and field is None:
            strange.append(number)
        if wire != 2:
            continue
        counts[1] += 1
        if net and number in (_NET_LAYER, _V1_LAYERS):
            counts[0] += 1
        if counts[0] > counts[2] or counts[1] > counts[3]:
            raise _Enough
        if layer is not None and number == _NAME:
            name = bytes(buf[start:stop]).decode("utf-8", "replace")
        if stop == start or field is None or field.message_type is None:
            continue
        kind = _layer_type(buf[start:stop]) if net and number == _NET_LAYER else None
        _measure(buf[start:stop], field.message_type, kind, counts, unknown)
    unknown.extend((name, layer, number) for number in sorted(set(strange)))


_V1_LAYERS = 2  # NetParameter.layers


def _layer_name(layer):
    for number, wire, _, start, stop in _fields(layer):
        if number == _NAME and wire == 2:
            return bytes(layer[start:stop]).decode("utf-8", "replace")
    return ""


def unknown_fields(layer):
    """Numbers of the top-level fields of canonical layer bytes that caffe.proto lacks."""
    known = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_number
    return sorted({number for number, *_ in _fields(layer) if number not in known})


def warn_unknown(unknown):
    """One WARNING per (layer name, type, field number) of measure()'s unknown fields."""
    for name, kind, number in unknown:
        log.warning("layer '%s' (%s): field %d is no parameter of %s layers in BVLC Caffe or "
                    "a fork pycaffe reads (caffe/proto/dialects.py); skipped, as BVLC skips "
                    "it", name, kind or "no type", number, kind or "such")


def drop_unparsable(data):
    """NetParameter bytes (canonical) with every layer field that does not parse as its
    message in caffe.proto dropped, each with a WARNING naming the layer and the field.

    Only fields inside layers are dropped, and never a learned blob: a file whose blobs or
    layout are broken stays broken, for the parser to reject (BVLC refuses it too).
    """
    out = []
    try:
        for kind, layer, raw in _layers(data):
            if layer is None:
                out.append(raw)
                continue
            where = f"layer '{_layer_name(layer)}' ({kind or 'no type'})"
            fixed = _repair(bytes(layer), caffe_pb2.LayerParameter, where, "", top=True)
            if fixed is None:
                return data
            out.append(_delimited(_NET_LAYER, fixed))
    except (ValueError, IndexError, message.DecodeError):
        return data
    return b"".join(out)


def _parses(cls, buf):
    try:
        cls.FromString(buf)
    except (message.DecodeError, RuntimeError, ValueError):
        return False
    return True


def _repair(buf, cls, where, path, top=False):
    """buf, a `cls` message, less the fields that do not parse; None if beyond repair."""
    if _parses(cls, buf):
        return buf
    fields = cls.DESCRIPTOR.fields_by_number
    try:
        found = list(_fields(buf))
    except (ValueError, IndexError, message.DecodeError):
        return None             # not a message at all (a string where a fork has one)
    out = []
    for number, wire, key_at, start, stop in found:
        field = fields.get(number)
        name = f"{path}{field.name if field else number}"
        disk = HOME.get(number, (number,))[0] if top else number    # as the file has it
        kept = buf[key_at:stop]
        if field is not None and field.message_type is not None and wire == 2:
            if top and number == _BLOBS:
                return None
            inner = _repair(buf[start:stop], _message_class(cls, field), where, name + ".")
            kept = None if inner is None else _delimited(number, inner)
        elif not _parses(cls, kept):
            kept = None
        if kept is None:
            log.warning("%s: field %s (number %d) does not parse as caffe.proto's; skipped, "
                        "as BVLC skips a field it does not know", where, name, disk)
            continue
        out.append(kept)
    fixed = b"".join(out)
    return fixed if _parses(cls, fixed) else None


def _message_class(cls, field):
    """The generated class of a message field of `cls`."""
    value = getattr(cls(), field.name)
    return type(value.add()) if is_repeated(field) else type(value)


def _is_segnet_layer(param):
    if param.type == "BN":
        bn = param.bn_param
        return any(bn.HasField(f) for f in ("bn_mode", "scale_filler", "shift_filler"))
    return param.type in ("Upsample", "DenseImageData") and param.HasField(
        {"Upsample": "upsample_param", "DenseImageData": "dense_image_data_param"}[param.type])


def is_segnet(net_param):
    """Whether a NetParameter is SegNet's dialect (holds a layer only SegNet's schema has)."""
    return any(_is_segnet_layer(lp) for lp in net_param.layer)


def _write_mapping(lp, segnet):
    """our number -> (number on disk, inner mapping) for one layer."""
    mapping, own = dict(HOME), {}
    for old, (new, inner) in LAYER_FIELDS.get(lp.type, {}).items():
        if lp.type == "BN" and (old == _SEGNET_BN) != _is_segnet_layer(lp):
            continue  # PSPNet's BN at 152, SegNet's at 45
        own.setdefault(new, (old, {v: k for k, v in inner.items()}))   # the first listed
    mapping.update(own)
    if segnet:
        for field, inner in SEGNET_FIELDS.items():
            mapping.setdefault(field, (field, {v: k for k, v in inner.items()}))
    return mapping


def to_disk(net_param):
    """Serialize a NetParameter with each fork layer's parameters at its fork's numbers."""
    segnet = is_segnet(net_param)
    out = []
    for lp in net_param.layer:
        layer, mapping = lp.SerializeToString(), _write_mapping(lp, segnet)
        if any(field.number in mapping for field, _ in lp.ListFields()):
            layer = _renumber(layer, mapping)   # (not for the many layers without: blobs)
        out.append(_delimited(_NET_LAYER, layer))
    rest = type(net_param)()
    rest.CopyFrom(net_param)
    del rest.layer[:]
    return rest.SerializeToString() + b"".join(out)
