"""The forks' binary dialects: fork layers' parameters at the forks' numbers on disk."""
import pytest
from google.protobuf import text_format

import caffe
from caffe import formats
from caffe.proto import caffe_pb2, dialects


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
    param = net(f'layer {{ name: "l" bottom: "x" top: "y" {text} }}')
    data = dialects.to_disk(param)
    (layer,) = layers_on_disk(data)
    assert numbers[0] in wire_fields(layer)         # the first is the one written
    assert caffe_pb2.NetParameter.FromString(dialects.to_canonical(data)) == param
    for number in numbers[1:]:
        moved = dialects._renumber(layer, {numbers[0]: (number, {})})
        other = dialects._delimited(100, moved)
        assert caffe_pb2.NetParameter.FromString(dialects.to_canonical(other)) == param
