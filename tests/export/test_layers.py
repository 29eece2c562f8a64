"""Layer by layer through both exporters, over the edge cases where ONNX's or torch's
operators and Caffe's layers part ways (pooling windows above all), and the errors."""
import numpy as np
import pytest
import torch

import caffe
import caffe.export
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from tests.export.util import check_exports, run_onnx, run_torch


def make_net(body, shapes=((2, 3, 7, 7),), phase=caffe.TEST, names=("x",)):
    """A net of Input layers (one per shape) followed by `body`, with random weights."""
    text = "".join(f'layer {{ name: "in_{n}" type: "Input" top: "{n}" input_param {{ shape '
                   f'{{ {" ".join(f"dim: {d}" for d in s)} }} }} }}\n'
                   for n, s in zip(names, shapes))
    param = parse_text(text + body, caffe_pb2.NetParameter())
    net = caffe.Net(param, phase)
    for layer in net._layers:
        for blob in layer.blobs:
            if layer.type != "BatchNorm":
                blob.data[...] = torch.randn(blob.shape)
    return net


def layer(type_, settings="", bottoms=("x",), tops=("y",), name="l"):
    return (f'layer {{ name: "{name}" type: "{type_}" '
            + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops) + settings + " }\n")


# -- pooling: Caffe's ceil rounding, clipping of the last window, and AVE divisors ---------
POOLS = [
    # (settings, input H x W)
    ("kernel_size: 3 stride: 2", (7, 7)),                 # ceil adds a clipped last window
    ("kernel_size: 3 stride: 2", (8, 8)),
    ("kernel_size: 2 stride: 2 pad: 1", (5, 5)),          # last window clipped away (pad)
    ("kernel_size: 3 stride: 2 pad: 1", (6, 7)),
    ("kernel_size: 3 stride: 1 pad: 2", (5, 5)),          # pad above kernel / 2: not torch's
    ("kernel_size: 3 stride: 3 pad: 2", (7, 8)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0", (6, 7)),
    ("kernel_size: 1 stride: 3", (5, 5)),                 # a window wholly past the input
    ("kernel_size: 2 stride: 3", (6, 6)),
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (8, 8)),   # rows no window reaches
    ("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (8, 9)),
    ("global_pooling: true", (5, 6)),
    ("kernel_size: 7 stride: 1", (7, 7)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("settings,size", POOLS)
def test_pooling_windows(method, settings, size):
    net = make_net(layer("Pooling", f"pooling_param {{ pool: {method} {settings} }}"),
                   [(2, 3) + size])
    out = check_exports(net)["y"]
    # The reference numbers come from caffe.Net, whose pooling matches the golden cases;
    # here also the shapes, since a wrong ceil/clip rule changes them first.
    assert out.shape == net.blobs["y"].data.shape


def test_pooling_ave_divisor_counts_padding_not_overhang():
    # Input of ones: Caffe divides each window's sum by its size clipped to the padded
    # input, so padded windows give less than 1 and the ceil overhang does not count.
    net = make_net(layer("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 "
                                    "pad: 1 }"), [(1, 1, 6, 6)])
    out = check_exports(net, {"x": np.ones((1, 1, 6, 6), np.float32)})["y"][0, 0]
    assert out[0, 0] == pytest.approx(4 / 9) and out[1, 1] == pytest.approx(1.0)
    # The last window, rows 5..7, is clipped to the padded input (5..6): divisor 2 x 2, but
    # only row 5 and column 5 hold input.
    assert out[-1, -1] == pytest.approx(1 / 4)


@pytest.mark.parametrize("settings,size", [("kernel_size: 2 stride: 2", (6, 6)),
                                           ("kernel_size: 3 stride: 2 pad: 1", (7, 6)),
                                           ("kernel_size: 3 stride: 1 pad: 2", (5, 5)),
                                           ("kernel_size: 2 stride: 2 round_mode: FLOOR",
                                            (7, 7))])
def test_pooling_max_mask_top(settings, size):
    net = make_net(layer("Pooling", f"pooling_param {{ pool: MAX {settings} }}",
                         tops=("y", "mask")), [(2, 3) + size])
    check_exports(net, outputs=["y", "mask"])


def test_pooling_mask_with_a_window_outside_the_input():
    # Caffe's mask is -1 there; torch reproduces it, ONNX's MaxPool has no such index.
    net = make_net(layer("Pooling", "pooling_param { pool: MAX kernel_size: 1 stride: 3 }",
                         tops=("y", "mask")), [(1, 2, 5, 5)])
    check_exports(net, outputs=["y", "mask"], onnx=False)
    assert (net.blobs["mask"].data[..., -1, :] == -1).all()
    with pytest.raises(caffe.export.ExportError, match="mask"):
        caffe.export.to_onnx(net, outputs=["y", "mask"])


def test_pooling_stochastic_test_phase():
    net = make_net(layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 3 "
                                    "stride: 2 }"), [(2, 3, 7, 7)])
    check_exports(net, {"x": np.random.RandomState(0).rand(2, 3, 7, 7).astype(np.float32)})


@pytest.mark.parametrize("height,method", [(1, "MAX"), (3, "MAX"), (2, "AVE")])
def test_spp(height, method):
    net = make_net(layer("SPP", f"spp_param {{ pyramid_height: {height} pool: {method} }}"),
                   [(2, 3, 7, 9)])
    check_exports(net)


# -- the other layers: settings the golden cases leave out -----------------------------------
CASES = {
    "conv_axis2": (layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 "
                                        "axis: 2 stride: 2 pad: 1 dilation: 2 }"),
                   [(2, 2, 3, 9, 8)]),
    "conv_multi_bottom": (layer("Convolution", "convolution_param { num_output: 6 "
                                               "kernel_size: 2 group: 3 bias_term: false }",
                                ("x", "x2"), ("y", "y2")), [(2, 3, 5, 5), (2, 3, 5, 5)]),
    "conv_1d": (layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 }"),
                [(2, 3, 9)]),
    "deconv_dilated": (layer("Deconvolution", "convolution_param { num_output: 4 "
                                              "kernel_h: 3 kernel_w: 2 stride: 2 dilation: 2 "
                                              "pad: 1 group: 2 }"), [(2, 4, 5, 6)]),
    "im2col_dilated": (layer("Im2col", "convolution_param { kernel_size: 3 stride: 2 pad: 1 "
                                       "dilation: 2 }"), [(2, 3, 7, 8)]),
    "lrn_within_5": (layer("LRN", "lrn_param { local_size: 5 alpha: 2 beta: 0.5 "
                                  "norm_region: WITHIN_CHANNEL }"), [(2, 3, 6, 7)]),
    "lrn_across_k": (layer("LRN", "lrn_param { local_size: 3 alpha: 3 beta: 0.6 k: 1.5 }"),
                     [(2, 6, 4, 5)]),
    "ip_transpose_4d": (layer("InnerProduct", "inner_product_param { num_output: 5 "
                                              "transpose: true axis: -2 }"), [(2, 3, 4, 6)]),
    "relu_negative_slope": (layer("ReLU", "relu_param { negative_slope: -0.3 }"), [(2, 5)]),
    "elu": (layer("ELU", "elu_param { alpha: 2.5 }"), [(2, 5)]),
    "bnll_large": (layer("BNLL"), [(4, 6)]),
    "power_general": (layer("Power", "power_param { power: 2.5 scale: 0.5 shift: 3 }"),
                      [(2, 5)]),
    "power_zero": (layer("Power", "power_param { power: 0 scale: 2 shift: -1 }"), [(2, 5)]),
    "power_const": (layer("Power", "power_param { power: 3 scale: 0 shift: 2 }"), [(2, 5)]),
    "power_linear": (layer("Power", "power_param { power: 1 scale: -2 shift: 0.5 }"),
                     [(2, 5)]),
    "exp_e": (layer("Exp", "exp_param { scale: 0.5 shift: -1 }"), [(2, 5)]),
    "log_e": (layer("Log", "log_param { scale: 2 shift: 20 }"), [(2, 5)]),
    "log_base10": (layer("Log", "log_param { base: 10 shift: 10 }"), [(2, 5)]),
    "prelu_shared_4d": (layer("PReLU", "prelu_param { channel_shared: true }"),
                        [(2, 3, 4, 4)]),
    "prelu_channels_2d": (layer("PReLU"), [(4, 6)]),
    "clip": (layer("Clip", "clip_param { min: -0.2 max: 0.1 }"), [(3, 4)]),
    "swish": (layer("Swish", "swish_param { beta: 0.4 }"), [(3, 4)]),
    "threshold": (layer("Threshold", "threshold_param { threshold: -0.1 }"), [(3, 4)]),
    "batchnorm_2d": (layer("BatchNorm", "batch_norm_param { eps: 0.01 }"), [(4, 6)]),
    "batchnorm_zero_factor": (layer("BatchNorm"), [(2, 3, 4, 4)]),
    "batchnorm_1d": (layer("BatchNorm"), [(5,)]),
    "scale_scalar_learned": (layer("Scale", "scale_param { num_axes: 0 bias_term: true }"),
                             [(2, 3, 4)]),
    "scale_negative_axis": (layer("Scale", "scale_param { axis: -2 num_axes: 1 }"),
                            [(2, 3, 4, 5)]),
    "scale_bottom_bias": (layer("Scale", "scale_param { axis: 1 bias_term: true }",
                                ("x", "s")), [(2, 3, 4), (3, 4)]),
    "bias_bottom_axis0": (layer("Bias", "bias_param { axis: 0 }", ("x", "b")),
                          [(2, 3, 4), (2, 3)]),
    "eltwise_sum_three": (layer("Eltwise", "eltwise_param { coeff: 2 coeff: 1 coeff: -0.5 }",
                                ("x", "a", "b")), [(2, 3), (2, 3), (2, 3)]),
    "eltwise_max_three": (layer("Eltwise", "eltwise_param { operation: MAX }",
                                ("x", "a", "b")), [(2, 3), (2, 3), (2, 3)]),
    "concat_negative_axis": (layer("Concat", "concat_param { axis: -1 }", ("x", "a")),
                             [(2, 3, 4), (2, 3, 2)]),
    "concat_legacy_dim": (layer("Concat", "concat_param { concat_dim: 2 }", ("x", "a")),
                          [(2, 3, 4), (2, 3, 2)]),
    "slice_legacy_dim": (layer("Slice", "slice_param { slice_dim: 2 }", tops=("y", "z")),
                         [(2, 3, 4)]),
    "slice_one_top": (layer("Slice", "slice_param { axis: 1 }"), [(2, 3)]),
    "crop_one_offset": (layer("Crop", "crop_param { axis: 1 offset: 1 }", ("x", "r")),
                        [(2, 4, 5, 6), (2, 2, 3, 4)]),
    "crop_default": (layer("Crop", "", ("x", "r")), [(2, 4, 5, 6), (1, 1, 3, 4)]),
    "flatten_default": (layer("Flatten"), [(2, 3, 4, 5)]),
    "reshape_zero_minus_one": (layer("Reshape", "reshape_param { shape { dim: 0 dim: -1 "
                                                "dim: 2 } axis: 1 num_axes: 2 }"),
                               [(2, 3, 4, 5)]),
    "tile_negative_axis": (layer("Tile", "tile_param { axis: -1 tiles: 3 }"), [(2, 3, 2)]),
    "reduction_mean_all": (layer("Reduction", "reduction_param { operation: MEAN "
                                              "coeff: 3 }"), [(2, 3, 4)]),
    "reduction_sumsq_last": (layer("Reduction", "reduction_param { operation: SUMSQ "
                                                "axis: -1 }"), [(2, 3, 4)]),
    "mvn_across_eps": (layer("MVN", "mvn_param { across_channels: true eps: 0.1 }"),
                       [(2, 3, 4, 5)]),
    "mvn_2d": (layer("MVN"), [(3, 8)]),
    "softmax_negative_axis": (layer("Softmax", "softmax_param { axis: -2 }"), [(2, 3, 4)]),
    "split": (layer("Split", tops=("y", "z")), [(2, 3)]),
    "dropout": (layer("Dropout", "dropout_param { dropout_ratio: 0.7 }"), [(2, 3)]),
    "parameter": (layer("Parameter", "parameter_param { shape { dim: 2 dim: 3 } }",
                        bottoms=()) + layer("Eltwise", "", ("x", "y"), ("z",), "sum"),
                  [(2, 3)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_exports(case):
    body, shapes = CASES[case]
    names = ["x", "x2"] if case == "conv_multi_bottom" else \
        ["x", "a", "b"][:len(shapes)] if case.startswith(("eltwise", "concat")) else \
        ["x", "s"] if case.startswith("scale_bottom") else ["x", "b"] if case.startswith(
            "bias_bottom") else ["x", "r"] if case.startswith("crop") else ["x"]
    net = make_net(body, shapes, names=names)
    feeds = {n: np.random.RandomState(i).randn(*s).astype(np.float32)
             for i, (n, s) in enumerate(zip(names, shapes))}
    if case == "bnll_large":
        feeds["x"] *= 100
    if case.startswith("batchnorm"):
        bn = net._layers[-1]
        bn.blobs[0].data[...] = torch.randn(bn.blobs[0].shape)
        bn.blobs[1].data[...] = torch.rand(bn.blobs[1].shape) + 0.1
        bn.blobs[2].data[...] = 0 if case == "batchnorm_zero_factor" else 2.5
    outputs = [b for b in net.outputs]
    check_exports(net, feeds, outputs)


@pytest.mark.parametrize("settings", ["argmax_param { top_k: 1 }",
                                      "argmax_param { top_k: 3 out_max_val: true }",
                                      "argmax_param { top_k: 2 axis: -1 }",
                                      "argmax_param { top_k: 2 axis: 1 out_max_val: true }"])
def test_argmax_ties_rank_the_larger_index_first(settings):
    net = make_net(layer("ArgMax", settings), [(2, 4, 5)])
    x = np.random.RandomState(0).randint(0, 3, (2, 4, 5)).astype(np.float32)   # many ties
    check_exports(net, {"x": x}, tol=0)


def test_embed_and_batch_reindex():
    body = layer("Embed", "embed_param { num_output: 4 input_dim: 6 }", ("i",), ("e",), "emb") \
        + layer("BatchReindex", "", ("x", "j"), ("y",), "reindex")
    net = make_net(body, [(3, 2), (2, 5), (4,)], names=("i", "x", "j"))
    feeds = {"i": np.array([[0, 5], [2, 3], [1, 1]], np.float32),
             "x": np.random.RandomState(0).randn(2, 5).astype(np.float32),
             "j": np.array([1, 0, 1, 1], np.float32)}
    check_exports(net, feeds, ["e", "y"])


# -- the graph: in-place layers, shared bottoms, pruning, names ----------------------------
INPLACE = (layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 }",
                 tops=("c",), name="conv")
           + layer("BatchNorm", "", ("c",), ("c",), "bn")
           + layer("Scale", "scale_param { bias_term: true }", ("c",), ("c",), "scale")
           + layer("ReLU", "", ("c",), ("c",), "relu")
           + layer("Pooling", "pooling_param { pool: MAX kernel_size: 2 }", ("c",), ("p",),
                   "pool")
           + layer("Eltwise", "", ("p", "p"), ("s",), "sum")
           + layer("Sigmoid", "", ("c",), ("q",), "sig"))


def test_in_place_chains_and_shared_bottoms():
    net = make_net(INPLACE, [(2, 3, 8, 8)])
    bn = net._layers[net.layer_index["bn"]]
    bn.blobs[1].data[...] = 1.5
    bn.blobs[2].data[...] = 1
    # 'c' read after its in-place chain is the ReLU's output, as net.blobs['c'] shows.
    check_exports(net, outputs=["s", "q", "c"])
    model = caffe.export.to_onnx(net, outputs=["s", "c"])
    assert [o.name for o in model.graph.output] == ["s", "c"]
    assert "sig" not in {n.name for n in model.graph.node}      # pruned: nothing needs it


def test_input_modified_in_place():
    net = make_net(layer("ReLU", "", ("x",), ("x",)) + layer("TanH", "", ("x",), ("t",), "t"),
                   [(2, 3)])
    feeds = {"x": np.random.RandomState(0).randn(2, 3).astype(np.float32)}
    expected = np.tanh(np.maximum(feeds["x"], 0))
    got, model = run_onnx(net, feeds, ["t"])
    np.testing.assert_allclose(got["t"], expected, rtol=1e-6)
    assert [i.name for i in model.graph.input] == ["x"]
    got, _ = run_torch(net, feeds, ["t"])
    np.testing.assert_allclose(got["t"], expected, rtol=1e-6)
    # Asked for, the overwritten input comes out under the name of its last writer.
    model = caffe.export.to_onnx(net, outputs=["x", "t"])
    assert [o.name for o in model.graph.output] == ["x/l", "t"]
    got, _ = run_torch(net, feeds, ["x", "t"])
    np.testing.assert_allclose(got["x"], np.maximum(feeds["x"], 0))


def test_torch_module_follows_input_shapes_and_dtypes():
    body = (layer("Convolution", "convolution_param { num_output: 4 kernel_size: 3 }",
                  tops=("c",), name="conv")
            + layer("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }",
                    ("c",), ("p",), "pool")
            + layer("Flatten", "", ("p",), ("f",), "flat")
            + layer("InnerProduct", "inner_product_param { num_output: 3 }", ("f",), ("y",),
                    "ip"))
    net = make_net(body, [(2, 3, 9, 9)])
    module = caffe.export.to_torch(net)
    assert module.input_names == ["x"] and module.output_names == ["y"]
    assert {"layers.conv.weight", "layers.conv.bias", "layers.ip.weight"} <= \
        set(module.state_dict())
    x = torch.randn(5, 3, 9, 9)
    net.blobs["x"].reshape(5, 3, 9, 9)
    expected = net.forward(x=x.numpy())["y"]
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), expected, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(module.double()(x.double()).numpy(), expected, rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(module.float()(x=x).numpy(), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="inputs"):
        module(x, x)
    # The module trains like any other.
    module(x).sum().backward()
    assert module.layers["conv"].weight.grad is not None


def test_onnx_opsets_and_save(tmp_path):
    onnx = pytest.importorskip("onnx")
    net = make_net(layer("Pooling", "pooling_param { pool: AVE kernel_size: 3 stride: 2 }")
                   + layer("Softmax", "", ("y",), ("z",), "sm"), [(1, 3, 7, 7)])
    for opset in (13, 18, onnx.defs.onnx_opset_version()):
        path = tmp_path / f"m{opset}.onnx"
        caffe.export.to_onnx(net, path, opset=opset)
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        assert model.opset_import[0].version == opset
    with pytest.raises(caffe.export.ExportError, match="opset 12"):
        caffe.export.to_onnx(net, opset=12)


# -- errors ----------------------------------------------------------------------------------
def test_unexpressible_layer_names_layer_and_type():
    net = make_net(layer("Filter", "", ("x", "sel"), ("y",), "pick"), [(4, 3), (4,)],
                   names=("x", "sel"))
    for export in (caffe.export.to_onnx, caffe.export.to_torch):
        with pytest.raises(caffe.export.ExportError, match=r"layer 'pick' \(type Filter\)"):
            export(net)


@pytest.mark.parametrize("body,phase,match", [
    (layer("Softmax", "", tops=("p",), name="sm")
     + layer("MultinomialLogisticLoss", "", ("p", "label"), ("loss",)), caffe.TEST,
     r"'l' \(type MultinomialLogisticLoss\): loss and accuracy"),
    (layer("Dropout"), caffe.TRAIN, r"'l' \(type Dropout\): in the TRAIN phase"),
    (layer("BatchNorm"), caffe.TRAIN, r"'l' \(type BatchNorm\): it normalizes"),
    (layer("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 2 }"), caffe.TRAIN,
     r"'l' \(type Pooling\): STOCHASTIC"),
])
def test_training_only_layers_are_refused(body, phase, match):
    net = make_net(body, [(2, 3, 4, 4), (2, 1, 1, 1)], phase=phase, names=("x", "label"))
    for export in (caffe.export.to_onnx, caffe.export.to_torch):
        with pytest.raises(caffe.export.ExportError, match=match):
            export(net)


def test_blob_names_that_look_like_generated_ones():
    # 'c/relu' is a real blob here, and also the name the exporter would give the value
    # 'c' has between the convolution and the ReLU; 'conv.weight' that of a weight.
    body = (layer("Convolution", "convolution_param { num_output: 2 kernel_size: 1 }",
                  tops=("c",), name="conv")
            + layer("ReLU", "", ("c",), ("c",), "relu")
            + layer("TanH", "", ("c",), ("c/relu",), "t")
            + layer("Sigmoid", "", ("c/relu",), ("conv.weight",), "s"))
    net = make_net(body, [(1, 3, 2, 2)])
    check_exports(net, outputs=["c", "c/relu", "conv.weight"])


def test_an_input_can_be_an_output():
    net = make_net(layer("TanH", "", ("x",), ("t",), "t"), [(2, 3)])
    check_exports(net, outputs=["x", "t"])


def test_outputs_name_blobs_and_prune():
    net = make_net(layer("TanH", "", ("x",), ("t",), "t")
                   + layer("SoftmaxWithLoss", "", ("t", "label"), ("loss",), "loss"),
                   [(2, 3), (2,)], names=("x", "label"))
    feeds = {"x": np.random.RandomState(0).randn(2, 3).astype(np.float32)}
    got, model = run_onnx(net, feeds, ["t"])        # the loss layer is not needed
    assert [i.name for i in model.graph.input] == ["x"]
    np.testing.assert_allclose(got["t"], np.tanh(feeds["x"]), rtol=1e-6)
    with pytest.raises(caffe.export.ExportError, match="no blob named 'nope'"):
        caffe.export.to_onnx(net, outputs=["nope"])
