"""Caffe's files: weights in binary (V1 and V2) and HDF5, prototxt errors, atomic writes."""
import os

import numpy as np
import pytest
import torch

import caffe
from caffe import formats
from caffe.errors import ProtoError, WeightsError
from caffe.proto import caffe_pb2
from tests.conftest import shared_path


def lenet(weights=None):
    return caffe.Net(str(shared_path("golden", "formats", "lenet.prototxt")), weights, caffe.TEST)


def weights_of(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


def test_v1_and_v2_caffemodels_load_identical_weights():
    v2 = weights_of(lenet(str(shared_path("golden", "formats", "lenet_v2.caffemodel"))))
    v1 = weights_of(lenet(str(shared_path("golden", "formats", "lenet_v1.caffemodel"))))
    assert_same_weights(v1, v2)
    assert v2["conv1"][0].shape == (20, 1, 5, 5) and v2["ip2"][0].shape == (10, 500)
    assert np.abs(v2["ip1"][0]).sum() > 0


def test_saved_model_reloads_identically_and_is_a_bvlc_netparameter(tmp_path):
    net = lenet(str(shared_path("golden", "formats", "lenet_v2.caffemodel")))
    path = tmp_path / "out.caffemodel"
    net.save(str(path))
    param = caffe_pb2.NetParameter.FromString(path.read_bytes())
    assert not param.layers and [lp.name for lp in param.layer] == net._layer_names
    for lp, original in zip(param.layer, net.param.layer):
        for blob in lp.blobs:
            assert blob.shape.dim and len(blob.data) == np.prod(blob.shape.dim)
            assert not blob.HasField("num")      # current format, no legacy dims
        del lp.blobs[:]
        assert lp == original
    assert_same_weights(weights_of(lenet(str(path))), weights_of(net))


def test_hdf5_round_trip(tmp_path):
    net = lenet(str(shared_path("golden", "formats", "lenet_v2.caffemodel")))
    path = tmp_path / "out.caffemodel.h5"
    net.save(str(path))
    import h5py
    with h5py.File(path, "r") as f:
        assert f["data/conv1/0"].shape == (20, 1, 5, 5) and "pool1" in f["data"]
    assert_same_weights(weights_of(lenet(str(path))), weights_of(net))


def test_weights_of_another_net_name_layer_and_shapes(tmp_path):
    text = shared_path("golden", "formats", "lenet.prototxt").read_text()
    other = tmp_path / "other.prototxt"
    other.write_text(text.replace("num_output: 10", "num_output: 2"))
    net = caffe.Net(str(other), caffe.TEST)
    with pytest.raises(WeightsError, match=r"layer 'ip2': cannot copy param 0, shape "
                                           r"\(10, 500\) vs \(2, 500\)"):
        net.copy_from(str(shared_path("golden", "formats", "lenet_v2.caffemodel")))


@pytest.mark.parametrize("content", [b"", b"\x08\x96\x01garbage\xff\xff", b"not a model at all"])
def test_non_protobuf_weights_are_a_clear_error(tmp_path, content):
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(content)
    with pytest.raises(ProtoError, match="bad.caffemodel"):
        formats.read_caffemodel(str(path))


def test_a_prototxt_given_as_weights_is_named_as_text(tmp_path):
    """net.copy_from(prototxt), `caffe test -weights x.prototxt`: not 'wire format corrupt'."""
    prototxt = shared_path("golden", "formats", "lenet.prototxt")
    message = (r"lenet.prototxt: a text file \(a prototxt net definition\?\), not a binary "
               r".caffemodel of trained weights")
    with pytest.raises(ProtoError, match=message):
        formats.read_caffemodel(str(prototxt))
    with pytest.raises(ProtoError, match=message):
        lenet().copy_from(str(prototxt))
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(ProtoError, match="empty.caffemodel: not a Caffe model: the file holds "
                                         "no layers"):
        formats.read_caffemodel(str(empty))


def test_truncated_weights_are_a_clear_error(tmp_path):
    data = shared_path("golden", "formats", "lenet_v2.caffemodel").read_bytes()
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProtoError, match="cut.caffemodel.*truncated"):
        lenet(str(path))


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProtoError, match="nothere.prototxt: cannot read"):
        caffe.Net(str(tmp_path / "nothere.prototxt"), caffe.TEST)


def test_prototxt_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.prototxt"
    path.write_text('name: "x"\nlayer {\n  name: "a"\n  tpye: "ReLU"\n}\n')
    with pytest.raises(ProtoError, match=r"bad.prototxt line 4: .*tpye"):
        caffe.Net(str(path), caffe.TEST)
    path.write_text('name: "x"\nlayer {\n  name: "a"\n')
    with pytest.raises(ProtoError, match=r"bad.prototxt line \d+"):
        caffe.Net(str(path), caffe.TEST)


def test_binaryproto_round_trip(tmp_path):
    mean = formats.read_binaryproto(str(shared_path("golden", "formats", "ResNet_mean.binaryproto")))
    assert (mean.channels, mean.height, mean.width) == (3, 224, 224)
    path = tmp_path / "m.binaryproto"
    formats.write_binary_proto(str(path), mean)
    assert path.read_bytes() == mean.SerializeToString()


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(b"old")

    def explode(f):
        f.write(b"partial")
        raise RuntimeError("disk full")
    with pytest.raises(RuntimeError):
        formats.atomic_write(str(path), explode)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["w.bin"]


def test_float64_net_saves_double_data(tmp_path):
    net = caffe.Net(str(shared_path("golden", "formats", "lenet.prototxt")), caffe.TEST,
                    dtype=torch.float64)
    path = tmp_path / "d.caffemodel"
    net.save(str(path))
    assert_same_weights(weights_of(caffe.Net(str(shared_path("golden", "formats", "lenet.prototxt")),
                                             str(path), caffe.TEST, dtype=torch.float64)),
                        weights_of(net))
