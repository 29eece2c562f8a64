"""caffe.Net's arguments (caffe/net_args.py): its forms, the phase by number or name, and a file
in the wrong argument named before anything is built."""
import numpy as np
import pytest

import caffe
from caffe import net_args
from caffe.errors import CaffeError, NetError
from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from tests.conftest import shared_path

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 1 } } }
"""


@pytest.fixture
def tiny_files(tmp_path):
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY)
    net = caffe.Net(str(model), caffe.TEST)
    net.save(str(tmp_path / "tiny.caffemodel"))
    net.save_hdf5(str(tmp_path / "tiny.caffemodel.h5"))
    return model, tmp_path / "tiny.caffemodel", tmp_path / "tiny.caffemodel.h5", net


@pytest.mark.parametrize("form,message", [
    (lambda m, w, h: caffe.Net(w, m, caffe.TEST),
     r"model '.*tiny.caffemodel' is a binary .caffemodel holding trained weights and weights "
     r"'.*tiny.prototxt' a text file: the two are swapped"),
    (lambda m, w, h: caffe.Net(w, caffe.TEST, weights=m), "the two are swapped"),
    (lambda m, w, h: caffe.Net(w, caffe.TEST),
     r"model '.*tiny.caffemodel' is a binary .caffemodel holding trained weights, not a net "
     r"definition; the net definition \(.prototxt\) comes first, the weights \(.caffemodel\) "
     r"second: caffe.Net\(model, weights, phase\), caffe test -model M -weights W"),
    (lambda m, w, h: caffe.Net(h, caffe.TEST), r"model '.*tiny.caffemodel.h5' is an HDF5 file"),
    (lambda m, w, h: caffe.Net(m, m, caffe.TEST),
     r"weights '.*tiny.prototxt' is a text file \(a prototxt net definition\?\), not a "
     r".caffemodel"),
    (lambda m, w, h: caffe.Net(m, caffe.TEST, weights=m), r"weights '.*tiny.prototxt' is a text"),
])
def test_a_file_in_the_wrong_argument_is_named(tiny_files, form, message):
    """Before, Net(weights, model, TEST) built the net from the .caffemodel's own copy of the
    definition and failed later at some layer (or at the weights)."""
    model, weights, h5, _ = tiny_files
    with pytest.raises(CaffeError, match=message):
        form(str(model), str(weights), str(h5))


def test_a_binary_net_definition_without_weights_still_loads(tiny_files, tmp_path):
    model, _, _, _ = tiny_files
    binary = tmp_path / "tiny_def.pb"
    binary.write_bytes(parse_text(TINY, caffe_pb2.NetParameter()).SerializeToString())
    assert caffe.Net(str(binary), caffe.TEST)._layer_names == ["data", "ip"]


@pytest.mark.parametrize("name,phase", [("train", caffe.TRAIN), ("TEST", caffe.TEST),
                                        ("Test", caffe.TEST), (caffe.TRAIN, caffe.TRAIN),
                                        (np.int64(1), caffe.TEST)])
def test_phase_by_name_or_number(tiny_files, name, phase):
    model, weights, _, trained = tiny_files
    for net in (caffe.Net(str(model), name), caffe.Net(str(model), str(weights), name),
                caffe.Net(str(model), phase=name, weights=str(weights))):
        assert net.phase == phase
    np.testing.assert_array_equal(net.params["ip"][0].data, trained.params["ip"][0].data)


@pytest.mark.parametrize("phase", [7, -1, "val", True, 1.5])
def test_a_bad_phase_names_the_argument(tiny_files, phase):
    model, weights, _, _ = tiny_files
    with pytest.raises(NetError, match=r"caffe.Net: phase .* is neither caffe.TRAIN \(0\) nor "
                                       r"caffe.TEST \(1\) \(the names 'train' and 'test'"):
        caffe.Net(str(model), str(weights), phase)


def test_file_kind(tmp_path):
    assert net_args.file_kind(shared_path("golden", "formats", "lenet.prototxt")) == "text"
    assert net_args.file_kind(shared_path("golden", "formats", "lenet_v2.caffemodel")) == "binary"
    caffe.Net(str(shared_path("golden", "formats", "lenet.prototxt")), caffe.TEST).save_hdf5(
        str(tmp_path / "w.h5"))
    assert net_args.file_kind(tmp_path / "w.h5") == "hdf5"
    assert net_args.file_kind(tmp_path / "absent") is None
    assert net_args.file_kind(tmp_path) is None          # a folder: its reader says so
    (tmp_path / "blank").write_text("\n")
    assert net_args.file_kind(tmp_path / "blank") is None
