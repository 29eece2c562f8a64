"""The golden layer cases recorded by BVLC Caffe, through both exporters.

Each case's net (the reference's weights, its recorded inputs) is exported with the layer's
tops as outputs; the ONNX model in onnxruntime and the to_torch module must reproduce the
reference's recorded forward output within 1e-4. Cases of layers that have no deploy-time
meaning must be refused with an error naming the layer.
"""
import numpy as np
import pytest

import caffe
import caffe.export
from tests.conftest import SHARED, shared_path
from tests.export.util import HAVE_ONNX, assert_close, run_onnx, run_torch

GOLDEN = SHARED / "golden" / "layers"
CASES = sorted(p.name for p in GOLDEN.iterdir()) if GOLDEN.is_dir() else ["(absent)"]
# Loss and accuracy layers are training-only; Filter's output size depends on the data;
# a TRAIN BatchNorm normalises by batch statistics.
REFUSED = ("Accuracy", "Loss", "Filter")


def load_case(case):
    folder = shared_path("golden", "layers", case)
    phase = caffe.TRAIN if (folder / "phase").read_text().strip() == "TRAIN" else caffe.TEST
    golden = np.load(folder / "golden.npz")
    net = caffe.Net(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"), phase)
    feeds = {}
    for key in golden.files:
        if key.startswith("in/"):
            name = key[3:]
            if f"in_{name}" in net.params and net.layer_dict[f"in_{name}"].type == "Parameter":
                net.params[f"in_{name}"][0].data[...] = golden[key]   # exported as a constant
            else:
                feeds[name] = golden[key]
    return net, feeds, golden


@pytest.mark.parametrize("case", CASES)
def test_golden_case_exports(case):
    net, feeds, golden = load_case(case)
    layer = net.layer_dict["layer"]
    tops = net.top_names["layer"]
    refused = any(word in layer.type for word in REFUSED) or case == "batchnorm_train"
    if refused:
        with pytest.raises(caffe.export.ExportError, match=f"'layer' \\(type {layer.type}\\)"):
            caffe.export.to_torch(net, outputs=tops)
        return
    for name, value in feeds.items():
        net.blobs[name].reshape(*value.shape)
    if HAVE_ONNX:
        got, _ = run_onnx(net, feeds, tops)
        for i, top in enumerate(tops):
            expected = golden[f"out/t{i}"]
            assert_close(got[top].reshape(expected.shape), expected, f"{case}: ONNX t{i}")
    got, _ = run_torch(net, feeds, tops)
    for i, top in enumerate(tops):
        expected = golden[f"out/t{i}"]
        assert_close(got[top].reshape(expected.shape), expected, f"{case}: torch t{i}")
