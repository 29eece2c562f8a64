"""caffe.draw and tools/draw_net: the net as a graph, labels, colours, phases, image files."""
import os
import shutil

import pytest
from PIL import Image

import caffe
from caffe import draw
from caffe.formats import parse_text, read_net_param
from caffe.proto import caffe_pb2
from caffe.tools import draw_net
from tests.conftest import SHARED, shared_path

needs_dot = pytest.mark.skipif(shutil.which("dot") is None
                               and os.environ.get("PYCAFFE_REQUIRE_GRAPHVIZ") != "1",
                               reason="graphviz's `dot` program is not installed "
                                      "(apt-get install graphviz) to render images")

TRAIN_TEST = """name: "tt"
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        data_param { batch_size: 64 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { batch_size: 100 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 2 pad: 1 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "ip"
        inner_product_param { num_output: 10 } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
        include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
        exclude { phase: TEST } }
"""


def tt_net():
    return parse_text(TRAIN_TEST, caffe_pb2.NetParameter())


def nodes_by_key(graph):
    return {n.get_name().strip('"'): n for n in graph.get_nodes()}


def keyed_graph(*args, **kwargs):
    return draw.get_pydot_graph(*args, keyed=True, **kwargs)


def test_labels_and_colours():
    nodes = nodes_by_key(keyed_graph(tt_net(), "LR"))
    conv, pool, relu, ip = (nodes[k] for k in ("conv1_Convolution", "pool1_Pooling",
                                               "relu1_ReLU", "ip_InnerProduct"))
    assert conv.get("label") == r'"conv1\n(Convolution)\nkernel size: 5\nstride: 2\npad: 1"'
    assert pool.get("label") == r'"pool1\n(Pooling AVE)\nkernel size: 3\nstride: 2\npad: 0"'
    assert (conv.get("fillcolor"), pool.get("fillcolor"), ip.get("fillcolor")) == \
        ("#FF5050", "#FF9900", "#CC33FF")
    assert relu.get("fillcolor") == "#90EE90"             # in place
    assert nodes["accuracy_Accuracy"].get("fillcolor") == "#6495ED"
    assert nodes["conv1_blob"].get("shape") == "octagon"
    assert nodes["loss_blob"].get("shape") == "octagon"


def test_vertical_layout_and_learning_rate_multipliers():
    layer = tt_net().layer[2]
    assert draw.get_layer_label(layer, "TB", display_lrm=True) == \
        '"conv1 (Convolution) kernel size: 5 stride: 2 pad: 1 lr mult: 1.0, 2.0"'
    assert "lr mult" not in draw.get_layer_label(layer, "TB")
    # As BVLC: only learning layers show them, 1.0 where no param spec is given, none when
    # both are 0 (a frozen layer).
    ip = tt_net().layer[5]
    assert draw.get_layer_label(ip, "TB", display_lrm=True).endswith('lr mult: 1.0, 1.0"')
    for spec in layer.param:
        spec.lr_mult = 0
    assert "lr mult" not in draw.get_layer_label(layer, "TB", display_lrm=True)
    layer.param.add(lr_mult=3)
    with pytest.raises(draw.DrawError, match="conv1: 3 param specs"):
        draw.get_layer_label(layer, "TB", display_lrm=True)


def test_dot_source_names_nodes_as_bvlc():
    # Layer nodes are named by their labels, blob nodes by the blob names; a blob last
    # mentioned as a top has no style. tests/test_bvlc_python.py compares whole sources.
    source = draw.get_pydot_graph(tt_net(), "LR", phase=caffe.TRAIN).to_string()
    assert source.startswith("digraph tt {")
    assert "\nconv1 [shape=octagon" in source and "\nloss;\n" in source
    assert '"conv1\\n(Convolution)\\nkernel size: 5\\nstride: 2\\npad: 1" -> conv1 [label=20]' \
        in source


def test_edge_labels():
    graph = keyed_graph(tt_net(), "LR", phase=caffe.TRAIN)
    labels = {(e.get_source().strip('"'), e.get_destination().strip('"')): e.get("label")
              for e in graph.get_edges()}
    assert labels["conv1_Convolution", "conv1_blob"] == "20"
    assert labels["ip_InnerProduct", "ip_blob"] == "10"
    assert labels["mnist_Data", "data_blob"] == "Batch 64"
    assert labels["data_blob", "conv1_Convolution"] == '""'
    unlabelled = keyed_graph(tt_net(), "LR", label_edges=False)
    assert {e.get("label") for e in unlabelled.get_edges()} == {'""'}


@pytest.mark.parametrize("phase, present, absent", [
    (caffe.TRAIN, "loss_SoftmaxWithLoss", "accuracy_Accuracy"),
    (caffe.TEST, "accuracy_Accuracy", "loss_SoftmaxWithLoss")])
def test_phase_filtering(phase, present, absent):
    nodes = nodes_by_key(keyed_graph(tt_net(), "LR", phase=phase))
    assert present in nodes and absent not in nodes
    everything = nodes_by_key(keyed_graph(tt_net(), "LR"))
    assert present in everything and absent in everything


def test_bad_input():
    net = tt_net()
    with pytest.raises(draw.DrawError, match="rankdir must be one of LR, TB, BT, RL"):
        draw.get_pydot_graph(net, "XY")
    net.layer[0].exclude.add(phase=caffe.TEST)
    with pytest.raises(draw.DrawError, match="mnist has both include and exclude"):
        draw.get_pydot_graph(net, "LR", phase=caffe.TRAIN)
    with pytest.raises(draw.DrawError, match="no extension"):
        draw.draw_net_to_file(tt_net(), "/tmp/net_without_extension")


def test_odd_names_are_quoted():
    net = parse_text('name: "a net" layer { name: "in:put" type: "Input" top: "x\\"y" '
                     'input_param { shape { dim: 1 } } } '
                     'layer { name: "b|c{d}" type: "ReLU" bottom: "x\\"y" top: "z/w" }',
                     caffe_pb2.NetParameter())
    source = draw.draw_net(net, "LR", ext="dot").decode()
    # pydot leaves a name like in:put unquoted (graphviz reads a port) and would lose a
    # node named `graph`: those blob names are quoted here.
    assert r'"in:put\n(Input)"' in source and r'"b\|c\{d\}\n(ReLU)"' in source
    assert '"x\\"y" [shape=octagon' in source and '"z/w";' in source
    if shutil.which("dot"):
        assert draw.draw_net(net, "LR", ext="svg").startswith(b"<?xml")


def test_every_reference_model_draws():
    models = sorted(shared_path("models").glob("*.prototxt"))
    assert len(models) >= 10
    for path in models:
        source = draw.draw_net(read_net_param(path), "LR", ext="dot").decode()
        assert source.startswith("digraph")


@needs_dot
@pytest.mark.parametrize("ext, magic", [("png", b"\x89PNG"), ("svg", b"<?xml"),
                                        ("pdf", b"%PDF")])
def test_draw_net_to_file_formats(tmp_path, ext, magic):
    out = tmp_path / f"net.{ext}"
    draw.draw_net_to_file(tt_net(), str(out), "TB", phase=caffe.TEST)
    assert out.read_bytes().startswith(magic)


@needs_dot
def test_draw_net_tool_googlenet_png(tmp_path, capsys):
    shared_path("models", "bvlc_googlenet.prototxt")
    out = tmp_path / "googlenet.png"
    assert draw_net.main([str(SHARED / "models" / "bvlc_googlenet.prototxt"), str(out)]) == 0
    assert "Drawing net to" in capsys.readouterr().out
    with Image.open(out) as img:
        img.verify()
    with Image.open(out) as img:
        width, height = img.size
    assert width > 5 * height and height > 200     # LR: a long horizontal strip


@needs_dot
def test_draw_net_tool_vertical_and_phase(tmp_path):
    prototxt = tmp_path / "tt.prototxt"
    prototxt.write_text(TRAIN_TEST)
    out = tmp_path / "tt.png"
    assert draw_net.main([str(prototxt), str(out), "--rankdir", "TB", "--phase", "TRAIN",
                          "--display_lrm"]) == 0
    with Image.open(out) as img:
        width, height = img.size
    assert height > width


def test_draw_net_tool_errors(tmp_path, capsys):
    prototxt = tmp_path / "tt.prototxt"
    prototxt.write_text(TRAIN_TEST)
    assert draw_net.main([str(prototxt), str(tmp_path / "x.dot"), "--phase", "VAL"]) == 2
    assert "unknown phase 'VAL'" in capsys.readouterr().err
    assert draw_net.main([str(tmp_path / "missing.prototxt"), str(tmp_path / "x.dot")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert draw_net.main([str(prototxt), str(tmp_path / "x.dot")]) == 0
    assert (tmp_path / "x.dot").read_text().startswith('digraph tt {')
