"""Declared sizes are checked before anything is allocated; each limit is one variable, raisable.

caffe.blob.MAX_BLOB_COUNT (elements of any blob, or of an array a file declares),
caffe.data.image.MAX_IMAGE_PIXELS (decoded image size), caffe.formats.MAX_TEXT_BYTES and
MAX_BINARY_BYTES (file sizes). A file claiming 10^12 elements fails within a second, with an
error naming the size and the limit, and the process's memory does not grow.
"""
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import caffe
from caffe import blob, formats
from caffe import io as cio
from caffe.data import DataError, array_to_datum, datum_to_array, image, parse_datum
from caffe.errors import CaffeError, ProtoError
from caffe.proto import caffe_pb2
from caffe.testing import make_layer
from fuzz.seeds import png_bomb

TERA = 10 ** 12


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.fixture
def fast_and_small():
    """The call under test must fail in < 1 s and without raising the peak RSS by 200 MB."""
    before, start = _peak_rss_mb(), time.perf_counter()
    yield
    assert time.perf_counter() - start < 1.0
    assert _peak_rss_mb() - before < 200


def _write(path, data):
    path.write_bytes(data)
    return str(path)


# -- prototxt and weights ----------------------------------------------------------------------
@pytest.mark.parametrize("layer", [
    'type: "Input" top: "x" input_param { shape { dim: 1000000 dim: 1000000 } }',
    'type: "DummyData" top: "x" dummy_data_param { shape { dim: 1000 dim: 1000 dim: 1000000 } }',
    ('type: "DummyData" top: "x" dummy_data_param { num: 10000 channels: 10000 height: 100 '
     'width: 100 }'),
])
def test_tera_element_prototxt(tmp_path, fast_and_small, layer):
    path = tmp_path / "huge.prototxt"
    path.write_text(f'name: "huge" layer {{ name: "big" {layer} }}\n')
    with pytest.raises(CaffeError, match=r"has 1000000000000 elements, more than the limit "
                                         r"2147483647 \(caffe.blob.MAX_BLOB_COUNT\)"):
        caffe.Net(str(path), caffe.TEST)


def test_blob_limit_is_raisable_and_lowerable(monkeypatch):
    text = 'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 50 dim: 40 } } }'
    param = formats.parse_text(text, caffe_pb2.NetParameter())
    monkeypatch.setattr(blob, "MAX_BLOB_COUNT", 1999)
    with pytest.raises(CaffeError, match=r"\(50, 40\) has 2000 elements, more than the limit 1999"):
        caffe.Net(param, caffe.TEST)
    monkeypatch.setattr(blob, "MAX_BLOB_COUNT", 2000)
    assert caffe.Net(param, caffe.TEST).blobs["x"].data.shape == (50, 40)


def test_blob_shape_edge_cases():
    with pytest.raises(CaffeError, match="non-negative"):
        blob.checked_count((2, -3))
    with pytest.raises(CaffeError, match="33 axes, more than Caffe's 32"):
        blob.checked_count((1,) * 33)
    # Empty, but NumPy could not even describe the shape: refused too.
    with pytest.raises(CaffeError, match="ignoring its zero dimension"):
        blob.checked_count((TERA, 0, TERA))
    assert blob.checked_count((0, 5)) == 0


def test_tera_element_binaryproto(tmp_path, fast_and_small):
    proto = cio.array_to_blobproto(np.ones(3))
    proto.shape.dim[:] = [1, 1000, 1000, 1000000]
    path = _write(tmp_path / "mean.binaryproto", proto.SerializeToString())
    with pytest.raises(ProtoError, match=r"mean.binaryproto: blob shape .* 1000000000000 "
                                         r"elements, more than the limit"):
        formats.read_binaryproto(path)
    with pytest.raises(CaffeError, match="more than the limit"):
        cio.blobproto_to_array(proto)


def test_blobproto_shape_must_match_its_values(tmp_path):
    proto = cio.array_to_blobproto(np.ones((2, 3)))
    proto.shape.dim[:] = [2, 2]
    path = _write(tmp_path / "m.binaryproto", proto.SerializeToString())
    with pytest.raises(ProtoError, match=r"declares 4 values but the file holds 6"):
        formats.read_binaryproto(path)


def test_tera_element_caffemodel_blob(tmp_path, fast_and_small):
    net_text = ('layer { name: "in" type: "Input" top: "x" '
                'input_param { shape { dim: 1 dim: 4 } } } '
                'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" '
                'inner_product_param { num_output: 2 } }')
    net = caffe.Net(formats.parse_text(net_text, caffe_pb2.NetParameter()), caffe.TEST)
    weights = net.to_proto()
    weights.layer[1].blobs[0].shape.dim[:] = [1000000, 1000000]
    path = _write(tmp_path / "w.caffemodel", weights.SerializeToString())
    with pytest.raises(CaffeError, match=r"layer 'ip': cannot copy param 0, shape "
                                         r"\(1000000, 1000000\)"):
        net.copy_from(path)


def test_tera_element_hdf5_weights(tmp_path, fast_and_small):
    path = tmp_path / "w.caffemodel.h5"
    with h5py.File(path, "w") as f:      # chunked and never written: a few KB on disk
        f.create_group("data/ip").create_dataset("0", shape=(10 ** 6, 10 ** 6), dtype="f4",
                                                 chunks=(1, 1))
    with pytest.raises(ProtoError, match=r"w.caffemodel.h5: dataset /data/ip/0 shape "
                                         r"\(1000000, 1000000\) has 1000000000000 elements"):
        formats.read_hdf5_weights(str(path))


def test_tera_element_hdf5_data(tmp_path, fast_and_small):
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", shape=(10 ** 6, 10 ** 6), dtype="f4", chunks=(1, 1))
        f.create_dataset("label", shape=(10 ** 6,), dtype="f4", chunks=(1,))
    (tmp_path / "list.txt").write_text(f"{path}\n")
    layer = make_layer(f'type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
                       f'source: "{tmp_path / "list.txt"}" batch_size: 2 }}')
    with pytest.raises(CaffeError, match=r"d.h5: dataset /data shape .* more than the limit"):
        layer.layer_setup([], [caffe.blob.Blob(), caffe.blob.Blob()])


# -- records and images --------------------------------------------------------------------------
def test_huge_declared_datum(fast_and_small):
    datum = array_to_datum(np.zeros((1, 2, 2), np.uint8))
    datum.channels, datum.height, datum.width = 1000000, 1000000, 1000000
    record = parse_datum(datum.SerializeToString(), b"k")
    with pytest.raises(DataError, match=r"record 'k': Datum shape \(1000000, 1000000, 1000000\) "
                                        r"has 1000000000000000000 elements, more than the limit"):
        datum_to_array(record, b"k")
    with pytest.raises(CaffeError, match="more than the limit"):
        cio.datum_to_array(record)


def test_image_bomb_gigapixel(fast_and_small):
    bomb = png_bomb(100000, 100000)
    assert len(bomb) < 1000
    with pytest.raises(image.ImageError, match=r"10000000000 pixels.*MAX_IMAGE_PIXELS"):
        image.decode_image(bomb, True, "bomb.png")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_bomb_over_our_limit(tmp_path, fast_and_small):
    """Under Pillow's own refusal threshold, our limit is the one that speaks."""
    bomb = png_bomb(10000, 9000)
    with pytest.raises(image.ImageError, match=r"bomb.png: image of 10000x9000 = 90000000 "
                                               r"pixels, more than the limit 67108864 "
                                               r"\(caffe.data.image.MAX_IMAGE_PIXELS\)"):
        image.decode_image(bomb, None, "bomb.png")
    path = _write(tmp_path / "bomb.png", bomb)
    with pytest.raises(image.ImageError, match="more than the limit"):
        cio.load_image(path)
    datum = caffe_pb2.Datum(data=bomb, encoded=True)
    with pytest.raises(CaffeError, match="more than the limit"):
        datum_to_array(datum, b"k")


def test_image_limit_is_raisable(monkeypatch):
    img = image.encode_image(np.zeros((5, 7, 3), np.uint8), "png")
    monkeypatch.setattr(image, "MAX_IMAGE_PIXELS", 34)
    with pytest.raises(image.ImageError, match="5x7|7x5"):
        image.decode_image(img)
    monkeypatch.setattr(image, "MAX_IMAGE_PIXELS", 35)
    assert image.decode_image(img).shape == (5, 7, 3)


def test_formats_outside_the_allowlist_are_not_decoded(tmp_path):
    from PIL import Image
    buf = tmp_path / "x.eps"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format="EPS")
    with pytest.raises(image.ImageError, match="not an image in a known format"):
        image.decode_image(buf.read_bytes())


# -- file sizes and special files ----------------------------------------------------------------
def test_text_size_limit(tmp_path, monkeypatch):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "x"\n' + "# padding\n" * 20)
    monkeypatch.setattr(formats, "MAX_TEXT_BYTES", 100)
    with pytest.raises(ProtoError, match=r"net.prototxt: 210 bytes, more than the limit 100 "
                                         r"\(caffe.formats.MAX_TEXT_BYTES\)"):
        formats.read_net_param(str(path))
    monkeypatch.setattr(formats, "MAX_TEXT_BYTES", 1000)
    assert formats.read_net_param(str(path)).name == "x"


def test_binary_size_limit(tmp_path, monkeypatch):
    path = _write(tmp_path / "m.binaryproto", cio.array_to_blobproto(np.ones(50))
                  .SerializeToString())
    monkeypatch.setattr(formats, "MAX_BINARY_BYTES", 64)
    with pytest.raises(ProtoError, match=r"more than the limit 64 \(caffe.formats.MAX_BINARY"):
        formats.read_binaryproto(path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero")
def test_devices_and_fifos_are_not_read(tmp_path, fast_and_small):
    fifo = tmp_path / "fifo.prototxt"
    os.mkfifo(fifo)                      # opening it for reading would block forever
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(ProtoError, match="not a regular file"):
            formats.read_net_param(path)
        with pytest.raises(ProtoError, match="not a regular file"):
            formats.read_caffemodel(path)
    with pytest.raises(DataError, match="not a regular file"):
        image.read_image("/dev/zero")
    (tmp_path / "list.txt").write_text("/dev/zero 1\n")
    with pytest.raises(DataError, match="not a regular file"):
        image.read_image(image.read_image_list(tmp_path / "list.txt")[0][0])


def test_image_list_labels(tmp_path):
    for label in ("--2", "²", "99999999999"):
        (tmp_path / "l.txt").write_text(f"a.png {label}\n", encoding="utf-8")
        with pytest.raises(DataError, match="l.txt line 1"):
            image.read_image_list(tmp_path / "l.txt")
    (tmp_path / "l.txt").write_bytes(b"a.png 1\n\xff.png 2\n")
    with pytest.raises(DataError, match="l.txt' line 2: not UTF-8"):
        image.read_image_list(tmp_path / "l.txt")


def test_non_utf8_names_in_binary_models(tmp_path):
    layer = caffe_pb2.LayerParameter(name="ab", type="ReLU")
    data = caffe_pb2.NetParameter(layer=[layer]).SerializeToString().replace(b"ab", b"\xb5\xff")
    path = _write(tmp_path / "w.caffemodel", data)
    with pytest.raises(ProtoError, match=r"field layer\[0\].name of the binary NetParameter is "
                                         r"not UTF-8"):
        formats.read_caffemodel(path)


def test_limits_do_not_cost_a_normal_net(tmp_path):
    """The checks sit before allocation, not in the way: an ordinary net still loads."""
    net = caffe.Net(formats.parse_text(
        'layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }',
        caffe_pb2.NetParameter()), caffe.TEST, dtype=torch.float32)
    assert net.blobs["x"].data.shape == (2, 3)


KNOWN_BOMBS = Path(__file__).resolve().parents[1] / "fuzz" / "known"
REPLAY = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
from caffe.errors import CaffeError
from fuzz import targets
targets.setup()
data = open(sys.argv[2], "rb").read()
try:
    targets.TARGETS[sys.argv[1]](data)
except CaffeError as e:
    print("refused:", e)
"""


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_AS"), reason="needs RLIMIT_AS")
@pytest.mark.parametrize("name", sorted(p.name for p in KNOWN_BOMBS.glob("*-libhdf5-*")))
def test_libhdf5_allocation_bombs_fail_cleanly_under_a_memory_cap(name):
    """fuzz/known/README.md: libhdf5 sizes these allocations from the file; capped, they fail."""
    target = name.split("-libhdf5-")[0]
    out = subprocess.run([sys.executable, "-c", REPLAY, target, str(KNOWN_BOMBS / name)],
                         check=False, cwd=KNOWN_BOMBS.parents[1], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    # Under the cap (1.5 GB) the allocation fails inside libhdf5 and the reader says so.
    assert "refused:" in out.stdout and "HDF5" in out.stdout, out.stdout
