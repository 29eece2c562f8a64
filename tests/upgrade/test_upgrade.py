"""caffe.upgrade: old net and solver formats load as Caffe 1.0 upgrades them."""

import json
import logging

import numpy as np
import pytest
from google.protobuf import text_format

from caffe.errors import UpgradeError
from caffe.proto import caffe_pb2
from caffe.upgrade import (
    net_needs_upgrade, solver_needs_upgrade, upgrade_net_as_needed,
    upgrade_solver_as_needed)


def net_from_text(text):
    return text_format.Parse(text, caffe_pb2.NetParameter())


def upgraded(text, expect_success=True, settled=True):
    net = net_from_text(text)
    assert net_needs_upgrade(net)
    assert upgrade_net_as_needed(net, "test") is expect_success
    assert net_needs_upgrade(net) is not settled
    return net


# --- V0 ----------------------------------------------------------------------

V0_NET = """
name: "v0net"
layers {
  layer { name: "data" type: "data" source: "train_lmdb" batchsize: 64
          meanfile: "mean.binaryproto" cropsize: 28 mirror: true scale: 0.5 }
  top: "data" top: "label"
}
layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
layers {
  layer { name: "conv1" type: "conv" num_output: 16 kernelsize: 5 stride: 1
          biasterm: false group: 2 weight_filler { type: "gaussian" std: 0.01 }
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0 }
  bottom: "pad1" top: "conv1"
}
layers { layer { name: "relu1" type: "relu" } bottom: "conv1" top: "conv1" }
layers { layer { name: "pad2" type: "padding" pad: 1 } bottom: "conv1" top: "pad2" }
layers {
  layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
  bottom: "pad2" top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 3 alpha: 5e-05 beta: 0.75 }
  bottom: "pool1" top: "norm1"
}
layers { layer { name: "ip1" type: "innerproduct" num_output: 10 } bottom: "norm1" top: "ip1" }
layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } bottom: "ip1" top: "ip1" }
layers { layer { name: "loss" type: "softmax_loss" } bottom: "ip1" bottom: "label" top: "loss" }
"""

# Written from Caffe's rules: padding layers vanish, their pad moves into the
# conv/pool layer they fed, which now reads the padding layer's input; the
# transformation settings go to transform_param; blobs_lr / weight_decay
# become ParamSpecs.
V0_NET_UPGRADED = """
name: "v0net"
layer {
  name: "data" type: "Data" top: "data" top: "label"
  transform_param { scale: 0.5 mirror: true crop_size: 28 mean_file: "mean.binaryproto" }
  data_param { source: "train_lmdb" batch_size: 64 }
}
layer {
  name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 16 bias_term: false pad: 2 kernel_size: 5
                      stride: 1 group: 2 weight_filler { type: "gaussian" std: 0.01 } }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: AVE pad: 1 kernel_size: 3 stride: 2 }
}
layer {
  name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
  lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 }
}
layer { name: "ip1" type: "InnerProduct" bottom: "norm1" top: "ip1"
        inner_product_param { num_output: 10 } }
layer { name: "drop" type: "Dropout" bottom: "ip1" top: "ip1"
        dropout_param { dropout_ratio: 0.3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def test_v0_net_upgrades_like_caffe(caplog):
    caplog.set_level(logging.INFO, logger="caffe")
    net = upgraded(V0_NET)
    assert net == net_from_text(V0_NET_UPGRADED), text_format.MessageToString(net)
    assert "V0" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


def test_v0_deploy_net_inputs_become_input_layer():
    net = upgraded("""
        name: "deploy" input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8
        force_backward: true
        layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "pad" }
        layers { layer { name: "conv" type: "conv" num_output: 4 kernelsize: 3 }
                 bottom: "pad" top: "conv" }
    """)
    assert net == net_from_text("""
        name: "deploy" force_backward: true
        layer { name: "input" type: "Input" top: "data"
                input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
        layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
                convolution_param { num_output: 4 pad: 1 kernel_size: 3 } }
    """)


def test_v0_setting_for_wrong_layer_type_is_dropped_and_reported(caplog):
    caplog.set_level(logging.INFO, logger="caffe")
    net = upgraded("""layers { layer { name: "r" type: "relu" num_output: 3 }
                               bottom: "x" top: "x" }
                      input: "x" """, expect_success=False)
    assert [layer.type for layer in net.layer] == ["ReLU"]
    assert not net.layer[0].HasField("inner_product_param")
    assert "num_output" in caplog.text


@pytest.mark.parametrize("text, match", [
    ('layers { layer { name: "a" type: "warp_drive" } top: "a" }', "warp_drive"),
    ('layers { layer { name: "c" type: "conv" } bottom: "nowhere" top: "c" }',
     "nowhere"),
    ('input: "x" layers { layer { name: "p" type: "padding" pad: 1 } bottom: "x" top: "p" }'
     ' layers { layer { name: "r" type: "relu" } bottom: "p" top: "r" }', "padding"),
])
def test_v0_nets_that_cannot_be_upgraded(text, match):
    with pytest.raises(UpgradeError, match=match):
        upgrade_net_as_needed(net_from_text(text), "bad")


# --- V1 ----------------------------------------------------------------------

def test_v1_layer_fields():
    net = upgraded("""
        name: "v1"
        layers {
          name: "data" type: DATA top: "data" top: "label"
          data_param { source: "db" batch_size: 4 scale: 0.00390625 mirror: true
                       crop_size: 20 mean_file: "m.binaryproto" backend: LMDB }
          include { phase: TRAIN }
        }
        layers {
          name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
          blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
          param: "w" param: "b" blob_share_mode: PERMISSIVE
          convolution_param { num_output: 2 kernel_size: 3 }
        }
        layers { name: "deconv" type: DECONVOLUTION bottom: "conv" top: "up"
                 convolution_param { num_output: 1 kernel_size: 2 stride: 2 } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "up" bottom: "label"
                 top: "loss" loss_weight: 2 loss_param { ignore_label: 255 } }
    """)
    assert net == net_from_text("""
        name: "v1"
        layer {
          name: "data" type: "Data" top: "data" top: "label"
          include { phase: TRAIN }
          transform_param { scale: 0.00390625 mirror: true crop_size: 20
                            mean_file: "m.binaryproto" }
          data_param { source: "db" batch_size: 4 backend: LMDB }
        }
        layer {
          name: "conv" type: "Convolution" bottom: "data" top: "conv"
          param { name: "w" share_mode: PERMISSIVE lr_mult: 1 decay_mult: 1 }
          param { name: "b" lr_mult: 2 decay_mult: 0 }
          convolution_param { num_output: 2 kernel_size: 3 }
        }
        layer { name: "deconv" type: "Deconvolution" bottom: "conv" top: "up"
                convolution_param { num_output: 1 kernel_size: 2 stride: 2 } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "up" bottom: "label"
                top: "loss" loss_weight: 2 loss_param { ignore_label: 255 } }
    """)


def test_every_v1_type_has_a_v2_name():
    from caffe.upgrade import upgrade_v1_layer_type
    names = {upgrade_v1_layer_type(v.number)
             for v in caffe_pb2.V1LayerParameter.LayerType.DESCRIPTOR.values}
    assert {"", "AbsVal", "Im2col", "SoftmaxWithLoss", "TanH", "Threshold",
            "Deconvolution", "SigmoidCrossEntropyLoss"} <= names
    assert len(names) == len(caffe_pb2.V1LayerParameter.LayerType.DESCRIPTOR.values)


def test_v1_net_with_v2_layers_keeps_only_the_upgraded_ones(caplog):
    net = upgraded("""layer { name: "new" type: "ReLU" }
                      layers { name: "old" type: RELU }""", expect_success=False)
    assert [layer.name for layer in net.layer] == ["old"]
    assert "ignored" in caplog.text


def test_lenet_v1_caffemodel_matches_v2(shared):
    formats = shared / "golden" / "formats"
    v1 = caffe_pb2.NetParameter.FromString((formats / "lenet_v1.caffemodel").read_bytes())
    v2 = caffe_pb2.NetParameter.FromString((formats / "lenet_v2.caffemodel").read_bytes())
    assert len(v1.layers) and not len(v1.layer)
    assert upgrade_net_as_needed(v1, "lenet_v1.caffemodel")
    assert not len(v1.layers)

    # The V1 file has no Input layer: weights files need none.
    expected = [layer for layer in v2.layer if layer.type != "Input"]
    assert [(l.name, l.type, list(l.bottom), list(l.top)) for l in v1.layer] \
        == [(l.name, l.type, list(l.bottom), list(l.top)) for l in expected]
    for old, new in zip(v1.layer, expected):
        assert len(old.blobs) == len(new.blobs), old.name
        for a, b in zip(old.blobs, new.blobs):
            # Legacy blobs keep their 4-D dims, right-aligned to the real shape.
            shape = list(b.shape.dim)
            assert [a.num, a.channels, a.height, a.width] == [1] * (4 - len(shape)) + shape
            np.testing.assert_array_equal(np.asarray(a.data, np.float32),
                                          np.asarray(b.data, np.float32))


def tops_in_order(net):
    seen = []
    for layer in net.layer:
        seen += [top for top in layer.top if top not in seen]
    return seen


def test_vgg16_v1_prototxt(shared):
    original = text_format.Parse((shared / "models" / "vgg16_v1.prototxt").read_text(),
                                 caffe_pb2.NetParameter())
    net = caffe_pb2.NetParameter()
    net.CopyFrom(original)
    assert net_needs_upgrade(net)
    assert upgrade_net_as_needed(net, "vgg16_v1.prototxt")
    assert not net_needs_upgrade(net)
    assert not len(net.layers) and not len(net.input) and not len(net.input_dim)

    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 224, 224]]
    assert [l.name for l in net.layer[1:]] == [l.name for l in original.layers]
    assert {l.type for l in net.layer} == {"Input", "Convolution", "ReLU", "Pooling",
                                          "InnerProduct", "Dropout", "Softmax"}
    conv = net.layer[1].convolution_param
    assert (conv.num_output, list(conv.pad), list(conv.kernel_size)) == (64, [1], [3])

    # Same blobs, in the same order, as the reference built from this file.
    reference = json.loads((shared / "models" / "blob_shapes.json").read_text())
    assert tops_in_order(net) == [name for name, _ in reference["vgg16_v1"]["blobs"]]
    # The upgraded net prints and reads back as a current-format net.
    again = net_from_text(text_format.MessageToString(net))
    assert again == net and not net_needs_upgrade(again)


@pytest.mark.parametrize("model", ["ResNet-50-deploy", "ResNet-152-deploy"])
def test_resnet_legacy_input_header(shared, model, caplog):
    caplog.set_level(logging.INFO, logger="caffe")
    original = text_format.Parse((shared / "models" / f"{model}.prototxt").read_text(),
                                 caffe_pb2.NetParameter())
    assert list(original.input) == ["data"] and len(original.input_dim) == 4
    net = caffe_pb2.NetParameter()
    net.CopyFrom(original)
    assert upgrade_net_as_needed(net, model)
    assert not len(net.input) and not len(net.input_dim) and not len(net.input_shape)
    first = net.layer[0]
    assert (first.name, first.type, list(first.top)) == ("input", "Input", ["data"])
    assert [list(s.dim) for s in first.input_param.shape] == [[1, 3, 224, 224]]
    assert list(net.layer[1:]) == list(original.layer)
    assert "input" in caplog.text


def test_input_shape_fields():
    net = upgraded("""input: "a" input_shape { dim: 2 dim: 5 }
                      input: "b" input_shape { dim: 2 }
                      layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }""")
    assert net.layer[0] == text_format.Parse(
        """name: "input" type: "Input" top: "a" top: "b"
           input_param { shape { dim: 2 dim: 5 } shape { dim: 2 } }""",
        caffe_pb2.LayerParameter())
    assert [l.name for l in net.layer] == ["input", "sum"]


def test_inputs_without_shapes_are_dropped():
    # Old .caffemodel files name their inputs without shapes.
    net = upgraded('input: "data" layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    assert [l.name for l in net.layer] == ["r"] and not len(net.input)


def test_short_input_dim_is_an_error():
    with pytest.raises(UpgradeError, match="input_dim"):
        upgrade_net_as_needed(net_from_text('input: "a" input_dim: 1 input_dim: 2'))


# --- BatchNorm ---------------------------------------------------------------

def test_batch_norm_statistics_params_are_frozen():
    # Caffe keeps the three specs, so such a net still "needs" this (harmless,
    # repeatable) upgrade every time it is loaded.
    net = upgraded(settled=False, text="""
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "x"
                param { name: "mean" lr_mult: 1 } param { name: "var" }
                param { name: "factor" decay_mult: 3 } }
        layer { name: "bn2" type: "BatchNorm" bottom: "x" top: "y" }
        layer { name: "scale" type: "Scale" bottom: "y" top: "z"
                param { lr_mult: 1 } param { lr_mult: 2 } param { lr_mult: 3 } }
    """)
    bn, bn2, scale = net.layer
    assert [(p.name, p.lr_mult, p.decay_mult) for p in bn.param] \
        == [("mean", 0, 0), ("var", 0, 0), ("factor", 0, 0)]
    assert not len(bn2.param)
    assert [p.lr_mult for p in scale.param] == [1, 2, 3]


def test_current_nets_need_no_upgrade(shared):
    for path in sorted((shared / "golden" / "layers").glob("*/net.prototxt")):
        net = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
        assert not net_needs_upgrade(net), path


# --- solvers -----------------------------------------------------------------

@pytest.mark.parametrize("enum, name", [
    ("SGD", "SGD"), ("NESTEROV", "Nesterov"), ("ADAGRAD", "AdaGrad"),
    ("RMSPROP", "RMSProp"), ("ADADELTA", "AdaDelta"), ("ADAM", "Adam")])
def test_solver_type_enum(enum, name, caplog):
    caplog.set_level(logging.INFO, logger="caffe")
    solver = text_format.Parse(f"base_lr: 0.1 solver_type: {enum}",
                               caffe_pb2.SolverParameter())
    assert solver_needs_upgrade(solver)
    assert upgrade_solver_as_needed(solver, "solver.prototxt")
    assert solver.type == name and not solver.HasField("solver_type")
    assert not solver_needs_upgrade(solver)
    assert "solver_type" in caplog.text


def test_solver_with_both_type_fields_is_an_error():
    solver = caffe_pb2.SolverParameter(type="Adam",
                                       solver_type=caffe_pb2.SolverParameter.ADAM)
    with pytest.raises(UpgradeError):
        upgrade_solver_as_needed(solver)


def test_current_solvers_need_no_upgrade(shared):
    paths = sorted((shared / "golden").glob("**/*solver.prototxt"))
    assert paths
    for path in paths:
        solver = text_format.Parse(path.read_text(), caffe_pb2.SolverParameter())
        assert not solver_needs_upgrade(solver), path
