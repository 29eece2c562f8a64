"""Every reference deploy net in ../shared/models, exported to ONNX and to PyTorch.

Weights come from one fixed recipe (tests.export.util.fill_weights); at batch size 1 the
ONNX model (checked by onnx.checker, run by onnxruntime) and the to_torch module must give
the net's outputs, and the scores before the last Softmax, within 1e-4 of their largest
magnitude. Each net is built and run once for both exports.
"""
import json

import pytest

import caffe
from tests.conftest import SHARED, shared_path
from tests.export.util import (HAVE_ONNX, assert_close, caffe_forward, fill_weights,
                               random_inputs, run_onnx, run_torch)

MODELS = SHARED / "models"
NAMES = sorted(json.loads((MODELS / "blob_shapes.json").read_text())) \
    if (MODELS / "blob_shapes.json").exists() else ["(absent)"]
# The biggest (by weights or activations): tens of seconds between them on two cores.
SLOW = {"vgg16_v1", "ResNet-152-deploy", "bvlc_caffenet_full_conv"}


def scores_blob(net):
    """The blob the last Softmax normalises (None when the net ends elsewhere)."""
    names = [n for n, layer in zip(net._layer_names, net._layers) if layer.type == "Softmax"]
    return net.bottom_names[names[-1]][0] if names else None


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in NAMES])
def test_reference_model_exports(name):
    net = caffe.Net(str(shared_path("models", name + ".prototxt")), caffe.TEST)
    for blob in net.inputs:
        net.blobs[blob].reshape(1, *net.blobs[blob].shape[1:])
    net.reshape()
    fill_weights(net)
    outputs = list(net.outputs)
    if scores_blob(net) and scores_blob(net) not in outputs:
        outputs.append(scores_blob(net))
    feeds = random_inputs(net)
    expected = caffe_forward(net, feeds, outputs)
    if HAVE_ONNX:
        got, model = run_onnx(net, feeds, outputs)
        assert [i.name for i in model.graph.input] == net.inputs
        for out in outputs:
            assert_close(got[out], expected[out], f"{name}: ONNX {out}")
        del got, model
    got, _ = run_torch(net, feeds, outputs)
    for out in outputs:
        assert_close(got[out], expected[out], f"{name}: torch {out}")
