"""BVLC's separate tools also run as `caffe <tool> ARGS`."""
import caffe
from caffe.formats import read_binaryproto, read_net_param
from caffe.tools.caffe import TOOLS, main
from tests.conftest import shared_path


def test_compute_image_mean_as_a_subcommand(tmp_path):
    out = tmp_path / "mean.binaryproto"
    db = shared_path("golden", "formats", "small_raw_lmdb")
    assert main(["compute_image_mean", "-backend", "lmdb", str(db), str(out)]) in (0, None)
    expected = shared_path("golden", "formats", "small_mean.binaryproto")
    assert read_binaryproto(str(out)) == read_binaryproto(str(expected))


def test_upgrade_net_proto_text_as_a_subcommand(tmp_path):
    out = tmp_path / "vgg16.prototxt"
    assert main(["upgrade_net_proto_text", str(shared_path("models", "vgg16_v1.prototxt")),
                 str(out)]) in (0, None)
    upgraded = read_net_param(str(out))
    assert not upgraded.layers and upgraded.layer[0].type == "Input"
    assert upgraded.layer[1].type == "Convolution"


def test_every_tool_module_is_importable():
    import importlib
    for module, function in TOOLS.values():
        assert callable(getattr(importlib.import_module(f"caffe.tools.{module}"), function)), module
    assert caffe.Net
