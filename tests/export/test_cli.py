"""`caffe export`: the command-line front of to_onnx / to_torch, with gflags spellings."""
import numpy as np
import pytest
import torch

import caffe
from caffe.tools.export import main
from tests.conftest import shared_path
from tests.export.util import assert_close, fill_weights


@pytest.fixture
def lenet(tmp_path):
    model = str(shared_path("models", "lenet.prototxt"))
    net = caffe.Net(model, caffe.TEST)
    fill_weights(net)
    weights = str(tmp_path / "lenet.caffemodel")
    net.save(weights)
    return model, weights


def test_export_onnx_and_torch_program(lenet, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    model, weights = lenet
    onnx_path, torch_path = tmp_path / "lenet.onnx", tmp_path / "lenet.pt2"
    assert main(["export", "-model", model, "--weights", weights, f"-onnx={onnx_path}",
                 "--torch", str(torch_path), "-batch_size=3"]) == 0
    net = caffe.Net(model, weights, caffe.TEST)
    net.blobs["data"].reshape(3, 1, 28, 28)
    x = np.random.RandomState(0).rand(3, 1, 28, 28).astype(np.float32)
    expected = net.forward(data=x)["prob"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {"data": x})[0], expected, "ONNX prob")
    program = torch.export.load(str(torch_path))      # needs no caffe
    with torch.no_grad():
        assert_close(program.module()(torch.from_numpy(x)).numpy(), expected, "torch prob")


def test_export_state_dict_and_outputs(lenet, tmp_path):
    onnx = pytest.importorskip("onnx")
    model, weights = lenet
    path, onnx_path = tmp_path / "lenet.pt", tmp_path / "ip1.onnx"
    assert main(["-model", model, "-weights", weights, "-torch", str(path),
                 "--torch_format=state_dict", "--onnx", str(onnx_path), "--outputs", "ip1",
                 "--input_shape", "data=2,1,28,28", "--opset", "18"]) == 0
    state = torch.load(str(path))
    net = caffe.Net(model, weights, caffe.TEST)
    np.testing.assert_array_equal(state["layers.conv1.weight"].numpy(),
                                  net.params["conv1"][0].data)
    exported = onnx.load(str(onnx_path))
    assert [o.name for o in exported.graph.output] == ["ip1"]
    assert [d.dim_value for d in exported.graph.input[0].type.tensor_type.shape.dim] == \
        [2, 1, 28, 28]
    assert exported.opset_import[0].version == 18


def test_export_errors(lenet, tmp_path, capsys):
    model, weights = lenet
    assert main(["-model", model, "-weights", weights]) == 1
    assert "nothing to do" in capsys.readouterr().err
    assert main(["-model", model, "-onnx", str(tmp_path / "x.onnx"),
                 "-input_shape", "image=1,1,28,28"]) == 1
    assert "'image' is not an input" in capsys.readouterr().err
    assert main(["-model", str(tmp_path / "missing.prototxt"), "-onnx",
                 str(tmp_path / "x.onnx")]) == 1
