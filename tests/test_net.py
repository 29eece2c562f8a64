"""Net construction and running: splits, in-place layers, sharing, rules, loss weights, ranges."""
import numpy as np
import pytest
import torch

import caffe
from caffe.errors import CaffeError, NetError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2


def net_from(text, phase=caffe.TRAIN, **kw):
    return caffe.Net(parse_text(text, caffe_pb2.NetParameter()), phase,
                     dtype=torch.float64, **kw)


IP = 'inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 1 } ' \
     'bias_filler { type: "gaussian" std: 1 } }'


def test_blob_feeding_two_losses_gets_summed_gradient():
    net = net_from(f"""
      force_backward: true
      layer {{ name: "in" type: "Input" top: "x" top: "t1" top: "t2"
               input_param {{ shape {{ dim: 4 dim: 5 }} shape {{ dim: 4 dim: 3 }} shape {{ dim: 4 dim: 3 }} }} }}
      layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" {IP} }}
      layer {{ name: "l1" type: "EuclideanLoss" bottom: "y" bottom: "t1" top: "l1" }}
      layer {{ name: "l2" type: "EuclideanLoss" bottom: "y" bottom: "t2" top: "l2" loss_weight: 3 }}""")
    assert "y_ip_0_split" in net._layer_names      # BVLC's name: blob, layer, top index
    assert net.layer_dict["y_ip_0_split"].type == "Split"
    assert list(net.top_names["y_ip_0_split"]) == ["y_ip_0_split_0", "y_ip_0_split_1"]
    rng = np.random.default_rng(0)
    for name in ("x", "t1", "t2"):
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].shape)
    net.forward()
    net.backward()
    y, t1, t2 = (net.blobs[n].data for n in ("y", "t1", "t2"))
    np.testing.assert_allclose(net.blobs["y"].diff, (y - t1) / 4 + 3 * (y - t2) / 4, rtol=1e-12)


def test_in_place_relu():
    net = net_from("""
      force_backward: true
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "relu" type: "ReLU" bottom: "x" top: "x" loss_weight: 1 }""")
    assert list(net.blobs) == ["x"]
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]])
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["x"].data, np.maximum(x, 0))
    net.backward()
    np.testing.assert_array_equal(net.blobs["x"].diff, (x > 0).astype(float))


def test_shared_parameter_accumulates_into_one_diff():
    shared = f'param {{ name: "w" }} param {{ name: "b" }} {IP}'
    net = net_from(f"""
      force_backward: true
      layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 5 }} }} }}
      layer {{ name: "ip1" type: "InnerProduct" bottom: "x" top: "y1" {shared} loss_weight: 1 }}
      layer {{ name: "ip2" type: "InnerProduct" bottom: "x" top: "y2" {shared} loss_weight: 2 }}""")
    assert len(net.learnable_params) == 2
    assert net.param_owners == [-1, -1, 0, 1]
    w1, w2 = net.params["ip1"][0], net.params["ip2"][0]
    w1.data[...] = 0.5
    assert (w2.data == 0.5).all()
    x = np.random.default_rng(1).standard_normal((2, 5))
    net.blobs["x"].data[...] = x
    net.forward()
    net.clear_param_diffs()
    net.backward()
    # d/dW of sum(Wx) + 2 sum(Wx) = 3 * sum over batch of x, for every output row.
    np.testing.assert_allclose(w1.diff, np.tile(3 * x.sum(0), (3, 1)), rtol=1e-12)
    assert np.shares_memory(w1.diff, w2.diff) or np.array_equal(w1.diff, w2.diff)


def test_sharing_shape_mismatch_is_an_error():
    with pytest.raises(NetError, match="cannot share param 'w'"):
        net_from(f"""
          layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 5 }} }} }}
          layer {{ name: "a" type: "InnerProduct" bottom: "x" top: "a" param {{ name: "w" }} {IP} }}
          layer {{ name: "b" type: "InnerProduct" bottom: "a" top: "b" param {{ name: "w" }} {IP} }}""")


RULES = """
  layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
  layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
  layer { name: "test_only" type: "ReLU" bottom: "x" top: "b" include { phase: TEST } }
  layer { name: "staged" type: "ReLU" bottom: "x" top: "c" include { stage: "deploy" } }
  layer { name: "not_staged" type: "ReLU" bottom: "x" top: "d" exclude { stage: "deploy" } }
  layer { name: "level2" type: "ReLU" bottom: "x" top: "e" include { min_level: 2 } }
  layer { name: "both" type: "ReLU" bottom: "x" top: "f"
          include { phase: TEST stage: "deploy" stage: "fast" } }"""


@pytest.mark.parametrize("phase,level,stages,expected", [
    (caffe.TRAIN, 0, [], ["in", "train_only", "not_staged"]),
    (caffe.TEST, 0, [], ["in", "test_only", "not_staged"]),
    (caffe.TEST, 0, ["deploy"], ["in", "test_only", "staged"]),
    (caffe.TEST, 3, ["deploy", "fast"], ["in", "test_only", "staged", "level2", "both"]),
])
def test_phase_level_stage_rules(phase, level, stages, expected):
    net = caffe.Net(parse_text(RULES, caffe_pb2.NetParameter()), phase=phase, level=level,
                    stages=stages)
    assert [n for n in net._layer_names if "split" not in n] == expected


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(NetError, match="either include rules or exclude"):
        net_from('layer { name: "in" type: "Input" top: "x" include { phase: TEST } '
                 'exclude { phase: TRAIN } }')


def test_loss_weight_on_a_non_loss_layer():
    net = net_from("""
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "p" type: "Power" bottom: "x" top: "y" power_param { scale: 2 } loss_weight: 0.5 }""")
    x = np.arange(6.0).reshape(2, 3) - 2
    net.blobs["x"].data[...] = x
    loss = float(net.forward_prefilled())
    assert loss == pytest.approx(0.5 * (2 * x).sum())
    assert net.blob_loss_weights["y"] == 0.5
    # Input blobs get no gradient unless force_backward; the layer still needs none.
    assert not net.layer_need_backward[0]


def test_forward_backward_over_a_range():
    net = net_from(f"""
      force_backward: true
      layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 5 }} }} }}
      layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" {IP} }}
      layer {{ name: "relu" type: "ReLU" bottom: "y" top: "z" }}
      layer {{ name: "scale" type: "Power" bottom: "z" top: "out" power_param {{ scale: 3 }} loss_weight: 1 }}""")
    net.blobs["x"].data[...] = np.random.default_rng(2).standard_normal((2, 5))
    out = net.forward(end="ip")
    assert set(out) == {"y"} and (net.blobs["z"].data == 0).all()
    out = net.forward(start="relu")
    np.testing.assert_allclose(out["out"], 3 * np.maximum(net.blobs["y"].data, 0))
    net.blobs["z"].diff[...] = 1
    net.backward(start="relu", end="relu")
    np.testing.assert_array_equal(net.blobs["y"].diff, (net.blobs["y"].data > 0) * 1.0)
    assert (net.blobs["x"].diff == 0).all()     # the range stopped above ip


def test_pycaffe_forward_with_inputs_and_outputs():
    net = net_from("""
      layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
      layer { name: "relu" type: "ReLU" bottom: "x" top: "y" }""")
    out = net.forward(x=-np.ones((2, 3)))
    assert list(out) == ["y"] and (out["y"] == 0).all()
    with pytest.raises(CaffeError, match="do not match net inputs"):
        net.forward(z=np.ones((2, 3)))
    with pytest.raises(CaffeError, match="batch sized"):
        net.forward(x=np.ones((3, 3)))
    assert net.inputs == ["x"] and net.outputs == ["y"]
    assert net.top_names["relu"] == ["y"] and net.bottom_names["relu"] == ["x"]
    all_out = net.forward_all(x=np.arange(15.0).reshape(5, 3) - 7)
    np.testing.assert_array_equal(all_out["y"], np.maximum(np.arange(15.0).reshape(5, 3) - 7, 0))


def test_reshape_propagates_input_shape():
    net = net_from(f"""
      layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ dim: 2 dim: 5 }} }} }}
      layer {{ name: "ip" type: "InnerProduct" bottom: "x" top: "y" {IP} }}""")
    net.blobs["x"].reshape(7, 5)
    net.reshape()
    assert net.blobs["y"].data.shape == (7, 3)


def test_unknown_bottom_names_layer_and_blob():
    with pytest.raises(NetError, match=r"layer 'relu' \(ReLU\): unknown bottom blob 'nope'"):
        net_from("""
          layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }
          layer { name: "relu" type: "ReLU" bottom: "nope" top: "y" }""")


def test_unknown_layer_type_suggests_close_types():
    with pytest.raises(CaffeError, match="unknown layer type 'Relu'.*'ReLU'"):
        net_from('layer { name: "r" type: "Relu" }')
    with pytest.raises(CaffeError, match="'Convolution'"):
        net_from('layer { name: "c" type: "Convolutoin" }')
