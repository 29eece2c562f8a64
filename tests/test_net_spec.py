"""caffe.net_spec: NetSpec writes the same prototxt as pycaffe's, and builds nets that run."""
import numpy as np
import pytest
import torch

import caffe
from caffe.formats import parse_text
from caffe.net_spec import NetSpec, NetSpecError, to_proto
from caffe.net_spec import layers as L
from caffe.net_spec import params as P
from caffe.proto import caffe_pb2


def need_types(*types):
    missing = sorted(set(types) - set(caffe.layer_type_list()))
    if missing:
        pytest.fail(f"layer types not registered: {', '.join(missing)}")


def load_net(net_proto, tmp_path, phase=caffe.TEST):
    path = tmp_path / "net.prototxt"
    path.write_text(str(net_proto))
    return caffe.Net(str(path), phase, dtype=torch.float64)


def canonical(text):
    """Text as this protobuf prints it, so the float formatting is the library's."""
    return str(parse_text(text, caffe_pb2.NetParameter()))


def lenet(batch_size):
    n = NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                         dict(dim=[batch_size, 1, 1, 1])],
                                  transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20,
                            weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50,
                            weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.ip1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anon_lenet(batch_size):
    data, label = L.DummyData(shape=[dict(dim=[batch_size, 1, 28, 28]),
                                     dict(dim=[batch_size, 1, 1, 1])],
                              transform_param=dict(scale=1. / 255), ntop=2)
    conv1 = L.Convolution(data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    pool1 = L.Pooling(conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    conv2 = L.Convolution(pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    pool2 = L.Pooling(conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    ip1 = L.InnerProduct(pool2, num_output=500, weight_filler=dict(type='xavier'))
    relu1 = L.ReLU(ip1, in_place=True)
    ip2 = L.InnerProduct(relu1, num_output=10, weight_filler=dict(type='xavier'))
    loss = L.SoftmaxWithLoss(ip2, label)
    return loss.to_proto()


def silent_net():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    return n.to_proto()


# What pycaffe's net_spec writes for the three nets of its own test suite.
LENET_LAYERS = """
layer {{ name: "{data}" type: "DummyData" top: "{data}" top: "{label}"
  transform_param {{ scale: 0.00392156862745098 }}
  dummy_data_param {{ shape {{ dim: 50 dim: 1 dim: 28 dim: 28 }}
                      shape {{ dim: 50 dim: 1 dim: 1 dim: 1 }} }} }}
layer {{ name: "{conv1}" type: "Convolution" bottom: "{data}" top: "{conv1}"
  convolution_param {{ num_output: 20 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{pool1}" type: "Pooling" bottom: "{conv1}" top: "{pool1}"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "{conv2}" type: "Convolution" bottom: "{pool1}" top: "{conv2}"
  convolution_param {{ num_output: 50 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{pool2}" type: "Pooling" bottom: "{conv2}" top: "{pool2}"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "{ip1}" type: "InnerProduct" bottom: "{pool2}" top: "{ip1}"
  inner_product_param {{ num_output: 500 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{relu1}" type: "ReLU" bottom: "{ip1}" top: "{ip1}" }}
layer {{ name: "{ip2}" type: "InnerProduct" bottom: "{ip1}" top: "{ip2}"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{loss}" type: "SoftmaxWithLoss" bottom: "{ip2}" bottom: "{label}" top: "{loss}" }}
"""
NAMED = {k: k for k in ("data", "label", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1",
                        "ip2", "loss")}
ANONYMOUS = dict(data="DummyData1", label="DummyData2", conv1="Convolution1",
                 pool1="Pooling1", conv2="Convolution2", pool2="Pooling2",
                 ip1="InnerProduct1", relu1="ReLU1", ip2="InnerProduct2",
                 loss="SoftmaxWithLoss1")
SILENT = """
layer { name: "data" type: "DummyData" top: "data" top: "data2"
        dummy_data_param { shape { dim: 3 } } }
layer { name: "silence_data" type: "Silence" bottom: "data" }
layer { name: "silence_data2" type: "Silence" bottom: "data2" }
"""


def test_lenet_text_matches_pycaffe():
    assert str(lenet(50)) == canonical(LENET_LAYERS.format(**NAMED))


def test_anonymous_lenet_names_match_pycaffe():
    assert str(anon_lenet(50)) == canonical(LENET_LAYERS.format(**ANONYMOUS))


def test_zero_top_layers_text():
    assert str(silent_net()) == canonical(SILENT)


@pytest.mark.parametrize("make", [lenet, anon_lenet])
def test_lenet_builds_and_runs(make, tmp_path):
    need_types("DummyData", "Convolution", "Pooling", "InnerProduct", "ReLU",
               "SoftmaxWithLoss")
    net_proto = make(2)
    assert net_proto.layer[6].bottom == net_proto.layer[6].top      # ReLU in place
    net = load_net(net_proto, tmp_path, caffe.TRAIN)
    assert len(net.layers) == 9
    out = net.forward()
    assert list(out) == [net_proto.layer[-1].top[0]] and np.isfinite(list(out.values())[0])


def test_zero_top_net_runs(tmp_path):
    need_types("DummyData", "Silence")
    net = load_net(silent_net(), tmp_path)
    assert len(net.forward()) == 0


def test_layer_input_must_be_a_top():
    data = L.DummyData(ntop=2)   # a tuple of two Tops
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top "
                                        r"\(type is <(type|class) 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_repeated_nested_and_rule_params():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 8, 8]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 3], pad=1,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=dict(type="gaussian", std=0.01),
                           bias_filler=dict(type="constant", value=0.1),
                           include=dict(phase=caffe.TRAIN), engine="CAFFE")
    n.score = L.InnerProduct(n.conv, num_output=np.int64(2), loss_weight=0.5,
                             name="fc_score", propagate_down=[False])
    expected = """
    layer { name: "data" type: "Input" top: "data"
      input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
    layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
      param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
      include { phase: TRAIN }
      convolution_param { num_output: 4 pad: 1 kernel_size: 3 kernel_size: 3
        weight_filler { type: "gaussian" std: 0.01 }
        bias_filler { type: "constant" value: 0.1 } engine: CAFFE } }
    layer { name: "fc_score" type: "InnerProduct" bottom: "conv" top: "score"
      loss_weight: 0.5 propagate_down: false inner_product_param { num_output: 2 } }
    """
    assert str(n.to_proto()) == canonical(expected)


def test_params_that_live_in_another_types_message():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
    n.up = L.Deconvolution(n.data, num_output=1, kernel_size=4, stride=2)
    n.up2 = L.Deconvolution(n.up, convolution_param=dict(num_output=1, kernel_size=2))
    layer, layer2 = n.to_proto().layer[1:]
    assert layer.convolution_param.kernel_size == [4] and layer.convolution_param.stride == [2]
    assert layer2.convolution_param.num_output == 1


def test_shared_ancestors_written_once():
    data = L.Input(shape=dict(dim=[2, 3]))
    a, b = L.ReLU(data), L.TanH(data)
    net = to_proto(a, b)
    assert [layer.name for layer in net.layer] == ["Input1", "ReLU1", "TanH1"]
    assert net.layer[1].bottom == ["Input1"] and net.layer[2].bottom == ["Input1"]


def test_item_access_and_same_top_under_two_names():
    n = NetSpec()
    n["data"] = L.Input(shape=dict(dim=[2]))
    assert n["data"] is n.data and "data" in n and n.keys() == ["data"]
    n.alias = n.data     # the last name given wins, as in pycaffe
    assert n.to_proto().layer[0].top == ["alias"]


def test_top_used_before_assignment_is_a_clear_error():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[2]))
    with pytest.raises(AttributeError, match=r"no top 'conv1': it is used before it was "
                                             r"assigned \(assigned so far: data\)"):
        L.ReLU(n.conv1)
    assert not hasattr(n, "conv1")


def test_multi_top_layer_must_be_unpacked():
    n = NetSpec()
    with pytest.raises(TypeError, match=r"the layer has 2 tops: name each one, e.g. "
                                        r"n.a, n.b = L.DummyData\(..., ntop=2\)"):
        n.data = L.DummyData(shape=dict(dim=[1]), ntop=2)
    with pytest.raises(TypeError, match="must be a Top"):
        n.x = 3


def test_in_place_without_enough_bottoms():
    with pytest.raises(NetSpecError, match="in_place=True .* 1 top\\(s\\) and only 0"):
        L.ReLU(in_place=True)


def test_unknown_parameter_names_both_messages():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    n.ip = L.InnerProduct(n.data, num_ouput=3)
    with pytest.raises(NetSpecError, match="layer 'ip' \\(InnerProduct\\): unknown parameter "
                                           "'num_ouput': .* neither inner_product_param or "
                                           "LayerParameter"):
        n.to_proto()
    n.ip = L.InnerProduct(n.data, weight_filler=dict(tipe="xavier"))
    with pytest.raises(NetSpecError, match="inner_product_param.weight_filler has no field "
                                           "'tipe'"):
        n.to_proto()


def test_params_constants():
    assert P.Pooling.AVE == caffe_pb2.PoolingParameter.AVE
    assert P.Eltwise.SUM == caffe_pb2.EltwiseParameter.SUM
    with pytest.raises(AttributeError, match="PoolingParameter has no constant 'MEAN'"):
        P.Pooling.MEAN
    with pytest.raises(AttributeError, match="no message PoolParameter"):
        P.Pool.MAX


def test_to_proto_rejects_non_tops():
    with pytest.raises(TypeError, match="to_proto takes Tops"):
        to_proto("data")


def test_generated_name_colliding_with_a_given_name():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    hidden = L.ReLU(n.data)                   # unnamed: becomes 'ReLU1'
    n.ReLU1 = L.TanH(n.data)
    n.out = L.Eltwise(hidden, n.ReLU1)
    with pytest.raises(NetSpecError, match="unnamed ReLU top was named 'ReLU1' automatically, "
                                           "which is also the name given to a TanH top"):
        n.to_proto()
