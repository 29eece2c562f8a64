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


PSP_TRAIN = """
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 17 dim: 17 }
                      shape { dim: 4 dim: 1 dim: 17 dim: 17 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param {
        num_output: 8 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "msra" } } }
layer { name: "conv1/bn" type: "BN" bottom: "conv1" top: "conv1" bn_param {
        slope_filler { type: "constant" value: 1 } momentum: 0.9 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score" convolution_param {
        num_output: 2 kernel_size: 1 weight_filler { type: "msra" } } }
layer { name: "score_interp" type: "Interp" bottom: "score" top: "score_interp"
        interp_param { zoom_factor: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score_interp" bottom: "label" top: "loss" }
"""
SEGNET_TRAIN = """
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 16 dim: 16 }
                      shape { dim: 4 dim: 1 dim: 16 dim: 16 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param {
        num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "conv1_bn" type: "BN" bottom: "conv1" top: "conv1" bn_param {
        scale_filler { type: "constant" value: 1 } shift_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" top: "pool1_mask"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "upsample1" type: "Upsample" bottom: "pool1" bottom: "pool1_mask" top: "up1"
        upsample_param { scale: 2 } }
layer { name: "conv1_D" type: "Convolution" bottom: "up1" top: "score" convolution_param {
        num_output: 2 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        loss_param { weight_by_label_freqs: false } }
"""


@pytest.mark.parametrize("net", [PSP_TRAIN, SEGNET_TRAIN], ids=["pspnet", "segnet"])
def test_segmentation_nets_train(net):
    """SGD steps on a synthetic task lower the loss: the label says where the first channel
    of a blocky (2 x 2 upsampled) random image is positive."""
    import torch

    from tests.solvers.nets import make_solver
    solver = make_solver("base_lr: 0.1 momentum: 0.9 lr_policy: 'fixed' random_seed: 1",
                         net, dtype=torch.float32)
    rng = np.random.RandomState(0)
    losses = []
    for _ in range(40):
        n, c, h, w = solver.net.blobs["data"].data.shape
        low = rng.uniform(-1, 1, (n, c, (h + 1) // 2, (w + 1) // 2))
        data = low.repeat(2, 2).repeat(2, 3)[:, :, :h, :w].astype(np.float32)
        solver.net.blobs["data"].data[...] = data
        solver.net.blobs["label"].data[...] = (data[:, :1] > 0)
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
