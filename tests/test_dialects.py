"""The forks' binary dialects: fork layers' parameters at the forks' numbers on disk."""
import pytest
from google.protobuf import text_format

import caffe
from caffe import formats
from caffe.proto import caffe_pb2, dialects
from tests.proto.test_parse_limits import varint


def net(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def wire_fields(layer_bytes):
    return [number for number, *_ in dialects._fields(layer_bytes)]


def layers_on_disk(data):
    return [layer for kind, layer, _ in dialects._layers(data) if layer is not None]


PSP = '''name: "psp"
layer { name: "i" type: "Interp" bottom: "x" top: "y" interp_param { zoom_factor: 8 pad_beg: -1 } }
layer { name: "b" type: "BN" bottom: "y" top: "y" bn_param { frozen: true momentum: 0.5 } }
layer { name: "a" type: "SegAccuracy" bottom: "y" bottom: "l" top: "acc"
        seg_accuracy_param { ignore_label: 255 } }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }'''
SEGNET = '''name: "segnet"
layer { name: "b" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: LEARN } }
layer { name: "b2" type: "BN" bottom: "x" top: "x" bn_param { bn_mode: INFERENCE } }
layer { name: "u" type: "Upsample" bottom: "x" bottom: "m" top: "u"
        upsample_param { upsample_h: 5 } }
layer { name: "l" type: "SoftmaxWithLoss" bottom: "u" bottom: "t" top: "loss"
        loss_param { weight_by_label_freqs: true class_weighting: 0.5 } }'''


def test_psp_layers_use_psp_numbers_on_disk():
    data = dialects.to_disk(net(PSP))
    interp, bn, acc, inp = layers_on_disk(data)
    assert 143 in wire_fields(interp) and 20143 not in wire_fields(interp)
    assert 152 in wire_fields(bn)
    assert 144 in wire_fields(acc)
    assert 143 in wire_fields(inp)          # BVLC's input_param keeps its number
    assert caffe_pb2.NetParameter.FromString(dialects.to_canonical(data)) == net(PSP)


def test_segnet_layers_use_segnet_numbers_on_disk():
    data = dialects.to_disk(net(SEGNET))
    bn, bn2, up, loss = layers_on_disk(data)
    assert 45 in wire_fields(bn) and 152 not in wire_fields(bn)
    assert 137 in wire_fields(up)
    loss_param = next(bytes(loss[s:e]) for n, _, _, s, e in dialects._fields(loss) if n == 101)
    assert wire_fields(loss_param) == [4, 3] or sorted(wire_fields(loss_param)) == [3, 4]
    back = caffe_pb2.NetParameter.FromString(dialects.to_canonical(data))
    assert back.layer[0].bn_param.HasField("bn_mode")
    assert back.layer[1].bn_param.bn_mode == caffe_pb2.BNParameter.INFERENCE
    assert back.layer[2].upsample_param.upsample_h == 5
    assert back.layer[3].loss_param.weight_by_label_freqs
    assert list(back.layer[3].loss_param.class_weighting) == [0.5]


def test_empty_segnet_bn_param_is_marked_segnet():
    """SegNet writes bn_param (45) empty for bn_mode LEARN: it must not read as PSPNet's."""
    layer = (dialects._delimited(1, b"b") + dialects._delimited(2, b"BN")
             + dialects._delimited(45, b""))
    data = dialects._delimited(100, layer)
    back = caffe_pb2.NetParameter.FromString(dialects.to_canonical(data))
    assert back.layer[0].bn_param.HasField("bn_mode")
    assert back.layer[0].bn_param.bn_mode == caffe_pb2.BNParameter.LEARN
    assert 45 in wire_fields(layers_on_disk(dialects.to_disk(back))[0])   # written back SegNet's


def test_bvlc_files_pass_unchanged():
    plain = net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }'
                'layer { name: "l" type: "SoftmaxWithLoss" loss_param { normalization: FULL } }')
    data = plain.SerializeToString()
    assert dialects.to_canonical(data) is data
    assert caffe_pb2.NetParameter.FromString(dialects.to_disk(plain)) == plain
    assert dialects.to_canonical(b"\xff\xff") == b"\xff\xff"   # left to the parser's error


@pytest.mark.parametrize("text", [PSP, SEGNET])
def test_caffemodel_round_trip_through_formats(tmp_path, text):
    path = tmp_path / "m.caffemodel"
    formats.write_caffemodel(path, net(text))
    assert formats.read_caffemodel(path) == formats.read_caffemodel(path)
    back = formats.read_caffemodel(path)
    assert [lp.type for lp in back.layer] == [lp.type for lp in net(text).layer]


def test_segnet_bn_weights_load_as_segnet(tmp_path):
    """A SegNet file's BN with an empty bn_param still runs as SegNet's (2 blobs, LEARN)."""
    model = net('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 2 '
                'dim: 3 dim: 3 } } } layer { name: "b" type: "BN" bottom: "x" top: "y" '
                'bn_param { bn_mode: LEARN } }')
    for values in ([1.0, 2.0], [0.5, -0.5]):
        blob = model.layer[1].blobs.add()
        blob.shape.dim.extend([1, 2, 1, 1])
        blob.data.extend(values)
    model.layer[1].bn_param.ClearField("bn_mode")
    model.layer[1].bn_param.scale_filler.type = "constant"   # any SegNet field marks it
    formats.write_caffemodel(tmp_path / "m.caffemodel", model)
    model.layer[1].ClearField("blobs")
    (tmp_path / "net.prototxt").write_text(text_format.MessageToString(model))
    n = caffe.Net(str(tmp_path / "net.prototxt"), str(tmp_path / "m.caffemodel"), caffe.TEST)
    assert n._layers[n.layer_index["b"]].segnet
    assert n.params["b"][0].data.flatten().tolist() == [1.0, 2.0]


# -- every file BVLC reads, pycaffe reads (issue 30) ------------------------------------
def _field(number, wire, payload):
    """One field's bytes on the wire (payload: the value's bytes, without a length)."""
    key = varint(number << 3 | wire)
    return key + (varint(len(payload)) if wire == 2 else b"") + payload


def _delimited(number, payload):
    return _field(number, 2, payload)


FOREIGN = {0: b"\x2a", 5: b"\x00\x00\x80\x3f",   # a varint, a float
           2: b"com.yahoo.ml.caffe.ImageDataFrame"}   # what CaffeOnSpark puts at 10001
TABLE = sorted({(kind, disk) for kind, fields in dialects.LAYER_FIELDS.items()
                for disk in fields} | set(dialects.SEGNET_MARKS.items()))
# BVLC 1.0's LayerParameter numbers (its caffe.proto: "next available layer-specific ID: 149").
BVLC_NUMBERS = set(range(1, 12)) | set(range(100, 149))
# Numbers of the table that BVLC gave to fields of its own (143 input_param ...): in a layer
# of another type they are BVLC's fields, read as BVLC reads them.
FORK_ONLY = [(kind, number) for kind, number in TABLE if number not in BVLC_NUMBERS]


def test_no_fork_field_sits_at_a_raw_fork_number():
    ours = set(caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_number)
    assert not {n for n in ours if n not in BVLC_NUMBERS and n < 20000}
    assert {10001, 203, 8266711, 152, 45, 201} <= {n for _, n in FORK_ONLY}
    for fields in dialects.LAYER_FIELDS.values():
        for disk, (number, _) in fields.items():
            assert number in ours and (number == disk or number >= 20000), (disk, number)


def _model_with(number, wire, kind="Convolution", name="carrier"):
    """A .caffemodel whose `kind` layer carries field `number` with `wire`, plus weights."""
    param = net(f'layer {{ name: "{name}" type: "{kind}" bottom: "x" top: "y" '
                'convolution_param { num_output: 2 kernel_size: 1 } }')
    blob = param.layer[0].blobs.add()
    blob.shape.dim.extend([2, 1, 1, 1])
    blob.data.extend([0.5, -1.5])
    layer = param.layer[0].SerializeToString() + _field(number, wire, FOREIGN[wire])
    return param.layer[0], _delimited(100, layer)


@pytest.mark.parametrize("kind, number", FORK_ONLY, ids=[f"{k}-{n}" for k, n in FORK_ONLY])
@pytest.mark.parametrize("wire", sorted(FOREIGN))
def test_a_fork_number_in_a_layer_of_another_type_is_skipped(tmp_path, caplog, kind,
                                                             number, wire):
    """Each fork number of the table, in a Convolution layer, as a varint, a float and a
    string (none is the wire type of the fork's message): the file loads, the field is
    skipped with one WARNING, everything else of the layer is read."""
    expected, data = _model_with(number, wire)
    (tmp_path / "m.caffemodel").write_bytes(data)
    with caplog.at_level("WARNING", logger="caffe"):
        back = formats.read_caffemodel(tmp_path / "m.caffemodel")
    layer, = back.layer
    assert layer.convolution_param == expected.convolution_param
    assert list(layer.blobs[0].data) == [0.5, -1.5]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "layer 'carrier' (Convolution)" in warnings[0] and \
        f"field {number}" in warnings[0], warnings


def test_open_nsfw_memory_data_string_at_10001_loads(tmp_path, caplog):
    """Yahoo's open_nsfw .caffemodel (CaffeOnSpark): its MemoryData layer holds the string
    "com.yahoo.ml.caffe.ImageDataFrame" in field 10001, R-FCN's psroi_pooling_param number."""
    model = net('layer { name: "data" type: "MemoryData" top: "data" top: "label" '
                'memory_data_param { batch_size: 1 channels: 3 height: 4 width: 4 } } '
                'layer { name: "conv_1" type: "Convolution" bottom: "data" top: "conv_1" '
                'convolution_param { num_output: 2 kernel_size: 1 } }')
    blob = model.layer[1].blobs.add()
    blob.shape.dim.extend([2, 3, 1, 1])
    blob.data.extend([1, 2, 3, 4, 5, 6])
    data_layer = model.layer[0].SerializeToString() + _field(10001, 2, FOREIGN[2])
    (tmp_path / "resnet_50_1by2_nsfw.caffemodel").write_bytes(
        _delimited(100, data_layer) +
        _delimited(100, model.layer[1].SerializeToString()))
    (tmp_path / "deploy.prototxt").write_text(
        'input: "data" input_shape { dim: 1 dim: 3 dim: 4 dim: 4 }\n'
        'layer { name: "conv_1" type: "Convolution" bottom: "data" top: "conv_1" '
        'convolution_param { num_output: 2 kernel_size: 1 bias_term: false } }\n')
    with caplog.at_level("WARNING", logger="caffe"):
        n = caffe.Net(str(tmp_path / "deploy.prototxt"),
                      str(tmp_path / "resnet_50_1by2_nsfw.caffemodel"), caffe.TEST)
    assert n.params["conv_1"][0].data.ravel().tolist() == [1, 2, 3, 4, 5, 6]
    assert any("layer 'data' (MemoryData): field 10001" in r.getMessage()
               for r in caplog.records)


def test_a_fork_field_that_does_not_parse_for_its_own_type_is_dropped(tmp_path, caplog):
    """PriorBox's 203 holding a string that is no PriorBoxParameter; a Data layer's
    transform_param holding SSD's resize_param number (8) as such a string: only those
    fields go, the rest of each layer stays."""
    bad = FOREIGN[2]
    prior = (_delimited(1, b"prior") + _delimited(2, b"PriorBox") +
             _field(203, 2, bad))
    transform = _field(1, 5, b"\x00\x00\x80\x3b") + _field(8, 2, bad)  # scale 1/256, then 8
    data = (_delimited(1, b"data") + _delimited(2, b"Data") +
            _field(100, 2, transform))
    (tmp_path / "m.caffemodel").write_bytes(_delimited(100, prior) +
                                            _delimited(100, data))
    with caplog.at_level("WARNING", logger="caffe"):
        back = formats.read_caffemodel(tmp_path / "m.caffemodel")
    assert [lp.name for lp in back.layer] == ["prior", "data"]
    assert not back.layer[0].HasField("prior_box_param")
    assert back.layer[1].transform_param.scale == 1 / 256
    assert not back.layer[1].transform_param.HasField("resize_param")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "layer 'prior' (PriorBox): field prior_box_param (number 203)" in warnings[0]
    assert "layer 'data' (Data): field transform_param.resize_param" in warnings[1]


def test_broken_blobs_are_still_refused(tmp_path):
    blob = _field(5, 2, b"\x00\x00\x80")          # packed floats: 3 bytes
    layer = _delimited(1, b"ip") + _delimited(7, blob)
    (tmp_path / "m.caffemodel").write_bytes(_delimited(100, layer))
    with pytest.raises(caffe.CaffeError, match="m.caffemodel"):
        formats.read_caffemodel(tmp_path / "m.caffemodel")



# The community layers' numbers: each type's parameter on disk at every number its forks use.
COMMUNITY = [
    ('type: "ReLU6" relu6_param { negative_slope: 0.1 }', [211, 100000]),
    ('type: "Mish" mish_param { engine: CAFFE }', [150]),
    ('type: "Reorg" reorg_param { stride: 2 }', [159, 149]),
    ('type: "Upsample" upsample_param { scale: 2 }', [137, 149, 150]),
    ('type: "YoloDetectionOutput" yolo_detection_output_param { num_classes: 3 biases: 1 }',
     [601]),
    ('type: "Yolov3DetectionOutput" yolov3_detection_output_param { num_classes: 3 mask: 1 }',
     [602]),
    ('type: "Transpose" transpose_param { dim: 1 dim: 0 }', [8266710, 142]),
    ('type: "Reverse" reverse_param { axis: 1 }', [160, 143]),
    ('type: "Lstm" lstm_param { num_output: 8 clipping_threshold: 1 }', [8266711, 140]),
    ('type: "CTCGreedyDecoder" ctc_decoder_param { blank_index: 3 }', [158]),
    ('type: "DenseBlock" denseblock_param { numTransition: 8 growthRate: 8 }', [147]),
]


@pytest.mark.parametrize("text,numbers", COMMUNITY, ids=[t.split('"')[1] for t, _ in COMMUNITY])
def test_community_numbers_on_disk(text, numbers):
    """Written at the type's first number; read back from each of its numbers."""
    param = net(f'layer {{ name: "l" bottom: "x" top: "y" {text} }}')
    data = dialects.to_disk(param)
    (layer,) = layers_on_disk(data)
    assert numbers[0] in wire_fields(layer)
    assert caffe_pb2.NetParameter.FromString(dialects.to_canonical(data)) == param
    base = caffe_pb2.LayerParameter()
    base.CopyFrom(param.layer[0])
    field = text.split('" ')[1].split(" ")[0]
    payload = getattr(base, field).SerializeToString()
    base.ClearField(field)
    for number in numbers:
        other = _delimited(100, base.SerializeToString() + _field(number, 2, payload))
        assert caffe_pb2.NetParameter.FromString(dialects.to_canonical(other)) == param
