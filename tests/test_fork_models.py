"""The forks' segmentation deploy nets run here with the forks' numbers.

PSPNet-50/101, DeepLab-LargeFOV and SegNet (tests/fork_nets.py, the published structures at a
small input size) get the same seeded random weights as the reference did when it recorded
tests/golden_forks/models/<model>.npz (PSPNet's and SegNet's own builds, OpenCV dnn for
DeepLab); every recorded output must agree within 1e-4 of its largest value.
"""
from pathlib import Path

import numpy as np
import pytest

import caffe
from tests import fork_nets
from tests.golden_forks.record import MODELS

GOLDEN = Path(__file__).resolve().parent / "golden_forks" / "models"


# The biggest weights stay in memory; the others go through a .caffemodel we write, as the
# reference read them.
IN_MEMORY = {"pspnet50", "pspnet101"}


def build(model, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(eval("fork_nets." + MODELS[model][0]))
    if model in IN_MEMORY:
        return fork_nets.seeded_weights(str(path))
    fork_nets.seeded_weights(str(path), tmp_path / "weights.caffemodel")
    return caffe.Net(str(path), str(tmp_path / "weights.caffemodel"), caffe.TEST)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_fork_model_matches_reference(model, tmp_path):
    _, reference, keep = MODELS[model]
    golden = GOLDEN / f"{model}.npz"
    if not golden.is_file():
        pytest.skip(f"no output recorded by {reference} for {model}")
    net = build(model, tmp_path)
    net.blobs["data"].data[...] = fork_nets.seeded_input(net.blobs["data"].data.shape)
    net.forward()
    expected = np.load(golden)
    for blob, stride in keep.items():
        ours = net.blobs[blob].data[:, :, ::stride, ::stride]
        ref = expected[blob]
        assert ours.shape == ref.shape, f"{model} {blob}: {ours.shape} vs {ref.shape}"
        err = np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-12)
        assert err <= 1e-4, f"{model} {blob}: relative error {err:.3g} against {reference}"


def test_generated_nets_build_with_the_expected_output_shapes(tmp_path):
    for call, blob, shape in (("pspnet(41, 21, 50)", "conv6_interp", (1, 21, 41, 41)),
                              ("segnet(64, 12)", "prob", (1, 12, 64, 64)),
                              ("deeplab_largefov(65, 21)", "fc8_interp", (1, 21, 65, 65))):
        path = tmp_path / "net.prototxt"
        path.write_text(eval("fork_nets." + call))
        assert caffe.Net(str(path), caffe.TEST).blobs[blob].data.shape == shape
    with pytest.raises(ValueError, match="bins"):
        fork_nets.pspnet(45)
