"""Errors for layers and fields that only a fork defines: they name the fork and the way out."""
import pytest
import torch

import caffe
from caffe.errors import LayerSetupError, ProtoError
from caffe.formats import parse_text
from caffe.layer import LAYER_REGISTRY
from caffe.proto import caffe_pb2

INPUT = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }'


def build(text):
    return caffe.Net(parse_text(INPUT + text, caffe_pb2.NetParameter()), caffe.TEST)


@pytest.mark.parametrize("kind,fork", [("WarpCTCLoss", "senlinuc/caffe_ocr"),
                                       ("Yolov3", "eric612/MobileNet-YOLO"),
                                       ("Correlation", "lmb-freiburg/flownet2")])
def test_fork_layer_type_names_its_fork(kind, fork):
    with pytest.raises(LayerSetupError, match=f"'{kind}' is a layer of {fork}.*register_layer"):
        build(f'layer {{ name: "l" type: "{kind}" bottom: "x" top: "y" }}')


def test_unknown_layer_type_says_how_to_add_it():
    with pytest.raises(LayerSetupError, match="unknown layer type 'Frobnicate'.*Python"):
        build('layer { name: "l" type: "Frobnicate" bottom: "x" top: "y" }')


def test_fork_field_names_its_fork_and_line():
    text = INPUT + '\nlayer { name: "l" type: "WarpCTCLoss" ctc_loss_param { blank_index: 4 } }'
    with pytest.raises(ProtoError, match=r"net.prototxt line 2: .*ctc_loss_param.*caffe_ocr"):
        parse_text(text, caffe_pb2.NetParameter(), "net.prototxt")


def test_unknown_field_of_no_known_fork_is_plain():
    with pytest.raises(ProtoError) as e:
        parse_text('layer { frobnicate_param { } }', caffe_pb2.NetParameter(), "n.prototxt")
    assert "frobnicate_param" in str(e.value) and "fork" not in str(e.value)


def test_the_hint_works_a_registered_python_layer_builds_the_net():
    @caffe.register_layer
    class DoubleLayer(caffe.Layer):
        """y = 2 x."""

        type = "TestForkNamesDouble"

        def reshape(self, bottom, top):
            top[0].reshape_like(bottom[0])

        def forward(self, bottom, top):
            top[0].data[...] = 2 * bottom[0].data

    try:
        net = build('layer { name: "l" type: "TestForkNamesDouble" bottom: "x" top: "y" }')
        net.blobs["x"].data[...] = 1.5
        net.forward()
        assert torch.all(torch.as_tensor(net.blobs["y"].data) == 3)
    finally:
        LAYER_REGISTRY.pop("TestForkNamesDouble")
