"""The forks' segmentation and community layers through ONNX (onnxruntime against caffe.Net),
and the whole DeepLab-LargeFOV / SegNet / PSPNet structures."""
import numpy as np
import pytest
import torch

import caffe
from tests import fork_nets
from tests.export.test_layers import layer, make_net
from tests.export.util import assert_close, caffe_forward, check_exports, run_onnx

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

CASES = [
    (layer("Interp", "interp_param { zoom_factor: 3 }"), [(2, 3, 5, 4)]),
    (layer("Interp", "interp_param { height: 6 width: 9 pad_beg: -1 pad_end: -1 }"),
     [(1, 2, 6, 7)]),
    (layer("ConvolutionDepthwise", "convolution_param { num_output: 3 kernel_size: 3 pad: 1 }"),
     [(2, 3, 6, 6)]),
    (layer("ShuffleChannel", "shuffle_channel_param { group: 3 }"), [(2, 6, 3, 4)]),
    (layer("Reorg", "reorg_param { stride: 2 }"), [(2, 8, 4, 6)]),
    (layer("Reorg", "reorg_param { stride: 2 reverse: true }"), [(2, 16, 2, 3)]),
    (layer("Upsample", "upsample_param { scale: 2 }"), [(2, 3, 3, 4)]),
    (layer("Region", "region_param { classes: 3 coords: 4 boxes_of_each_grid: 2 softmax: true }"),
     [(1, 16, 3, 3)]),
    (layer("Axpy", "", bottoms=("a", "x", "b")), [(2, 3, 1, 1), (2, 3, 4, 5), (2, 3, 4, 5)]),
    (layer("BN", "bn_param { eps: 0.001 }"), [(2, 3, 4, 4)]),
    (layer("BN", "bn_param { bn_mode: INFERENCE }"), [(2, 3, 4, 4)]),
    (layer("BN", "bn_param { bn_mode: LEARN }"), [(2, 3, 4, 4)]),
    (layer("Pooling", "pooling_param { pool: MAX kernel_size: 2 stride: 2 }", tops=("p", "m"),
           name="pool") + layer("Upsample", "upsample_param { scale: 2 pad_out_w: true }",
                                bottoms=("p", "m")), [(2, 3, 6, 7)]),
]


@pytest.mark.parametrize("body,shapes", CASES, ids=[c[0].split('"')[3] + str(i)
                                                    for i, c in enumerate(CASES)])
def test_fork_layer_exports(body, shapes):
    names = ("a", "x", "b") if len(shapes) == 3 else ("x",)
    net = make_net(body, shapes, names=names)
    for lay in net._layers:
        if lay.type == "BN":
            for i, blob in enumerate(lay.blobs):
                blob.data[...] = torch.rand(blob.shape) + (0.5 if i == 3 else 0)
    check_exports(net, outputs=["y"], torch_=False)


@pytest.mark.parametrize("body", [layer("ReLU6"),
                                  layer("ReLU6", "relu6_param { negative_slope: 0.1 }"),
                                  layer("ReLU6", "relu6_param { negative_slope: -2 }"),
                                  layer("Mish"), layer("HardSwish"), layer("HardSigmoid")],
                         ids=["relu6", "relu6_leaky", "relu6_negative", "mish", "hard_swish",
                              "hard_sigmoid"])
def test_community_activations_export(body):
    """Inputs over [-30, 30]: both of ReLU6's bounds, Mish's softplus past 20, every piece of
    the hard functions."""
    net = make_net(body, [(4, 3, 5, 6)])
    x = np.linspace(-30, 30, 360, dtype=np.float32).reshape(4, 3, 5, 6)
    check_exports(net, {"x": x}, outputs=["y"])


@pytest.mark.parametrize("pool, upsample, size", [
    ("kernel_size: 2 stride: 2", "scale: 2 pad_out_h: true pad_out_w: true", (7, 9)),
    ("kernel_size: 2 stride: 2", "upsample_h: 7 upsample_w: 9", (7, 9)),      # SegNet 360x480
    ("kernel_size: 3 stride: 2 pad: 1", "upsample_h: 8 upsample_w: 10", (8, 10)),
])
def test_unpooling_follows_caffe_masks_through_ties(pool, upsample, size):
    # Whole numbers after a ReLU: most windows hold equal maxima (zeros above all), where
    # Caffe's mask takes the first in row-major order; the export's masks must match them
    # and scatter by them exactly.
    body = (layer("ReLU", "", tops=("r",), name="relu")
            + layer("Pooling", f"pooling_param {{ pool: MAX {pool} }}", bottoms=("r",),
                    tops=("p", "m"), name="pool")
            + layer("Upsample", f"upsample_param {{ {upsample} }}", bottoms=("p", "m")))
    net = make_net(body, [(2, 3) + size])
    x = np.random.default_rng(0).integers(-3, 3, (2, 3) + size).astype(np.float32)
    expected = caffe_forward(net, {"x": x}, ["m", "y"])
    got, _ = run_onnx(net, {"x": x}, ["m", "y"])
    np.testing.assert_array_equal(got["m"], expected["m"])
    np.testing.assert_array_equal(got["y"], expected["y"])


def test_segnet_batch_statistics_are_accurate():
    # E[x^2] - E[x]^2 over a map whose mean is large against its spread cancels: the export
    # must stay as near the exact statistics (the layer run in float64) as float32 output
    # allows, or a later MAX pooling's mask flips between near-equal values (issue 31: SegNet
    # and ENet disagreed by 0.7-4.6% in onnxruntime).
    net = make_net(layer("BN", "bn_param { bn_mode: LEARN }"), [(1, 16, 64, 64)])
    net64 = caffe.Net(net.to_proto(), caffe.TEST, dtype=torch.float64)
    for mine, theirs in zip(net64.params["l"], net.params["l"]):
        mine.data[...] = theirs.data
    x = np.maximum(np.random.default_rng(0).normal(0.3, 1, (1, 16, 64, 64)), 0) * 3 + 5
    exact = caffe_forward(net64, {"x": x}, ["y"])["y"]
    for opset in (None, 18):        # 18 moved ReduceMean's axes to an input
        got, _ = run_onnx(net, {"x": x.astype(np.float32)}, ["y"], opset=opset)
        assert_close(got["y"], exact, f"BN LEARN, opset {opset}", tol=2e-7)


@pytest.mark.slow
@pytest.mark.parametrize("call", ["deeplab_largefov(65, 21)", "segnet(64, 12)",
                                  "pspnet(41, 21, 50)"])
def test_fork_model_exports(call, tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(eval("fork_nets." + call))
    net = fork_nets.seeded_weights(str(path))
    feeds = {"data": fork_nets.seeded_input(net.blobs["data"].data.shape)}
    check_exports(net, feeds, outputs=[net.outputs[-1]], torch_=False)
