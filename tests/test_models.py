"""The reference deploy nets build with BVLC's blob names, order and shapes."""
import json

import pytest

import caffe
from tests.conftest import SHARED, shared_path

MODELS = SHARED / "models"
NAMES = sorted(json.loads((MODELS / "blob_shapes.json").read_text())) \
    if (MODELS / "blob_shapes.json").exists() else ["(absent)"]


@pytest.mark.parametrize("name", NAMES)
def test_reference_model_blob_shapes(name):
    expected = json.loads(shared_path("models", "blob_shapes.json").read_text())[name]
    net = caffe.Net(str(shared_path("models", name + ".prototxt")), caffe.TEST)
    for blob_name in net.inputs:
        shape = net.blobs[blob_name].shape
        net.blobs[blob_name].reshape(expected["input_batch"], *shape[1:])
    net.reshape()
    actual = [[n, list(b.shape)] for n, b in net.blobs.items()]
    assert [n for n, _ in actual] == [n for n, _ in expected["blobs"]]
    assert actual == expected["blobs"]
