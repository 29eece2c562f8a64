"""caffe.io: proto/datum/array conversions, image loading, resizing, 10-crop and Transformer."""
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from caffe import io as cio
from caffe.errors import CaffeError, ProtoError
from caffe.proto import caffe_pb2
from tests.conftest import shared_path


# -- BlobProto ---------------------------------------------------------------------------
def test_blobproto_legacy_and_new_shapes():
    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.arange(100.0).tolist())
    blob.num, blob.channels, blob.height, blob.width = 1, 1, 10, 10
    assert cio.blobproto_to_array(blob).shape == (1, 1, 10, 10)

    blob = caffe_pb2.BlobProto()
    blob.data.extend(np.arange(100.0).tolist())
    blob.shape.dim.extend([10, 10])
    np.testing.assert_array_equal(cio.blobproto_to_array(blob), np.arange(100.0).reshape(10, 10))


def test_blobproto_without_shape_is_scalar_or_error():
    blob = caffe_pb2.BlobProto()
    blob.data.append(123)
    assert cio.blobproto_to_array(blob) == 123
    blob.data.extend([1.0, 2.0])
    with pytest.raises(ValueError, match=r"declares shape \(\) .* holds 3 data values"):
        cio.blobproto_to_array(blob)


def test_array_blobproto_round_trip_with_diff():
    rng = np.random.default_rng(0)
    arr, diff = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    blob = cio.array_to_blobproto(arr, diff)
    assert list(blob.shape.dim) == [2, 3, 4]
    np.testing.assert_allclose(cio.blobproto_to_array(blob), arr, rtol=1e-6)
    np.testing.assert_allclose(cio.blobproto_to_array(blob, return_diff=True), diff, rtol=1e-6)
    with pytest.raises(ValueError, match="diff shape"):
        cio.array_to_blobproto(arr, diff[:1])


def test_double_blobproto_keeps_precision():
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.append(1)
    blob.double_data.append(0.1)
    assert cio.blobproto_to_array(blob)[0] == 0.1


def test_arraylist_round_trip():
    arrays = [np.arange(6.0).reshape(1, 2, 3), np.ones((4,)), np.full((2, 2), -1.5)]
    data = cio.arraylist_to_blobprotovector_str(arrays)
    assert cio.arraylist_to_blobprotovecor_str(arrays) == data   # pycaffe's old spelling
    back = cio.blobprotovector_str_to_arraylist(data)
    assert len(back) == 3
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ProtoError):
        cio.blobprotovector_str_to_arraylist(b"\x0a\xff\xff\xff")


def test_mean_file_to_per_channel_mean():
    mean = cio.blobproto_to_array(caffe_pb2.BlobProto.FromString(
        shared_path("golden", "formats", "ResNet_mean.binaryproto").read_bytes()))
    assert mean.shape == (1, 3, 224, 224)
    per_channel = mean[0].mean(1).mean(1)
    assert per_channel.shape == (3,) and np.all((per_channel > 50) & (per_channel < 200))


# -- Datum -------------------------------------------------------------------------------
def test_datum_round_trips():
    rng = np.random.default_rng(1)
    u8 = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    d = cio.array_to_datum(u8, label=7)
    assert d.data and not len(d.float_data) and d.label == 7
    back = cio.datum_to_array(caffe_pb2.Datum.FromString(d.SerializeToString()))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back, u8)

    f = rng.standard_normal((2, 3, 3))
    d = cio.array_to_datum(f)
    assert not d.data and len(d.float_data) == 18
    np.testing.assert_allclose(cio.datum_to_array(d), f, rtol=1e-6)


def test_datum_label_is_optional():
    with_label = cio.array_to_datum(np.ones((10, 10, 3)), label=1)
    without = cio.array_to_datum(np.ones((10, 10, 3)))
    assert not without.HasField("label")
    assert len(with_label.SerializeToString()) > len(without.SerializeToString())


def test_datum_bad_shapes():
    with pytest.raises(ValueError, match="3-D"):
        cio.array_to_datum(np.zeros((2, 2)))
    d = caffe_pb2.Datum(channels=1, height=2, width=2, data=b"\x00\x01\x02")
    with pytest.raises(ValueError, match=r"declares shape \(1, 2, 2\) but holds 3"):
        cio.datum_to_array(d)


def test_golden_lmdb_raw_and_png_datums_agree():
    lmdb = pytest.importorskip("lmdb")
    raw_path = shared_path("golden", "formats", "small_raw_lmdb")
    png_path = shared_path("golden", "formats", "small_png_lmdb")
    with lmdb.open(str(raw_path), readonly=True, lock=False) as raw_env, \
            lmdb.open(str(png_path), readonly=True, lock=False) as png_env:
        with raw_env.begin() as raw_txn, png_env.begin() as png_txn:
            key, value = next(iter(raw_txn.cursor()))
            raw = caffe_pb2.Datum.FromString(value)
            png = caffe_pb2.Datum.FromString(png_txn.get(key))
    assert png.encoded and not raw.encoded
    a = cio.datum_to_array(raw)
    assert a.shape == (1, 28, 28) and a.dtype == np.uint8
    np.testing.assert_array_equal(cio.datum_to_array(png), a)


# -- images ------------------------------------------------------------------------------
def _save(tmp_path, name, arr, mode=None):
    path = tmp_path / name
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return str(path)


def test_load_image_colour_grey_alpha(tmp_path):
    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    img = cio.load_image(_save(tmp_path, "rgb.png", rgb))
    assert img.dtype == np.float32 and img.shape == (2, 3, 3)
    np.testing.assert_allclose(img, rgb / 255.0, rtol=1e-6)

    rgba = np.dstack([rgb, np.full((2, 3), 7, np.uint8)])
    np.testing.assert_allclose(cio.load_image(_save(tmp_path, "rgba.png", rgba)), rgb / 255.0,
                               rtol=1e-6)

    grey = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    path = _save(tmp_path, "grey.png", grey)
    colour = cio.load_image(path)
    assert colour.shape == (2, 2, 3)
    np.testing.assert_allclose(colour[:, :, 1], grey / 255.0, rtol=1e-6)
    single = cio.load_image(path, color=False)
    assert single.shape == (2, 2, 1)
    np.testing.assert_allclose(single[:, :, 0], grey / 255.0, rtol=1e-6)

    grey16 = np.array([[0, 65535], [1000, 30000]], dtype=np.uint16)
    img16 = cio.load_image(_save(tmp_path, "grey16.png", grey16), color=False)
    np.testing.assert_allclose(img16[:, :, 0], grey16 / 65535.0, rtol=1e-6)


def test_load_image_missing_file(tmp_path):
    with pytest.raises(OSError):
        cio.load_image(str(tmp_path / "nope.jpg"))


# Recorded from BVLC's python/caffe/io.py (/opt/bvlc, scikit-image 0.24, SciPy 1.13):
# resize_image for interp_order 0..5 on 1-, 3- and 2-channel float images, and the grey and
# colour reads of a colour PNG with and without alpha (by skimage.io.imread as BVLC's
# load_image calls it; its as_grey= spelling is refused by scikit-image >= 0.19).
GOLDEN_IO = Path(__file__).parent / "golden" / "bvlc_io.npz"
RESIZE_CASES = [(11, 3), (3, 9), (4, 5), (7, 5)]


@pytest.mark.parametrize("order", range(6))
@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
def test_resize_image_matches_bvlc_for_every_order(case, order):
    pytest.importorskip("skimage")
    golden = np.load(GOLDEN_IO)
    out = cio.resize_image(golden[f"in{case}"], RESIZE_CASES[case], interp_order=order)
    expected = golden[f"out{case}_{order}"]
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-4)


def test_resize_image_constant_image_and_missing_extra(monkeypatch):
    const = cio.resize_image(np.full((4, 4, 1), 3.0), (2, 6))
    assert const.shape == (2, 6, 1) and const.dtype == np.float32 and np.all(const == 3.0)
    # A None entry makes the import fail as a missing package does.
    monkeypatch.setitem(sys.modules, "skimage.transform", None)
    with pytest.raises(CaffeError, match=r"pip install 'pycaffe\[io\]'"):
        cio.resize_image(np.random.rand(4, 4, 3), (2, 2))


@pytest.mark.parametrize("name", ["rgb", "rgba"])
def test_load_image_grey_of_colour_file_matches_bvlc(tmp_path, name):
    from PIL import Image
    golden = np.load(GOLDEN_IO)
    path = str(tmp_path / f"{name}.png")
    Image.fromarray(golden[name]).save(path)
    grey = cio.load_image(path, color=False)
    assert grey.shape == golden[name].shape[:2] + (1,) and grey.dtype == np.float32
    np.testing.assert_allclose(grey, golden[f"grey_{name}"], rtol=1e-6, atol=1e-7)
    colour = cio.load_image(path)
    np.testing.assert_allclose(colour, golden[f"colour_{name}"], rtol=1e-6)


def test_oversample_ten_crops():
    images = np.arange(2 * 6 * 8 * 1, dtype=np.float32).reshape(2, 6, 8, 1)
    crops = cio.oversample(list(images), (4, 4))
    assert crops.shape == (20, 4, 4, 1) and crops.dtype == np.float32
    im = images[1]
    expected = [im[0:4, 0:4], im[0:4, 4:8], im[2:6, 0:4], im[2:6, 4:8], im[1:5, 2:6]]
    for k, e in enumerate(expected):
        np.testing.assert_array_equal(crops[10 + k], e)
        np.testing.assert_array_equal(crops[15 + k], e[:, ::-1])
    with pytest.raises(ValueError, match="larger than the images"):
        cio.oversample(images, (7, 4))


# -- Transformer -------------------------------------------------------------------------
def make_transformer(shape=(2, 3, 4, 5)):
    t = cio.Transformer({"data": shape})
    t.set_transpose("data", (2, 0, 1))
    return t


def test_preprocess_order_and_deprocess_inverse():
    rng = np.random.default_rng(3)
    image = rng.random((4, 5, 3)).astype(np.float32)
    original = image.copy()
    mean = np.array([10.0, 20.0, 30.0])
    t = make_transformer()
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", mean)
    t.set_input_scale("data", 0.5)
    out = t.preprocess("data", image)
    expected = (image.transpose(2, 0, 1)[[2, 1, 0]] * 255 - mean[:, None, None]) * 0.5
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    np.testing.assert_array_equal(image, original)          # the caller's array is untouched
    np.testing.assert_allclose(t.deprocess("data", out[np.newaxis]), image, atol=1e-5)


def test_preprocess_resizes_to_the_blob():
    t = make_transformer()
    out = t.preprocess("data", np.ones((8, 10, 3), np.float32))
    assert out.shape == (3, 4, 5)


def test_set_mean_shapes():
    t = make_transformer()
    t.set_mean("data", np.zeros((3, 4, 5)))
    t.set_mean("data", np.zeros(3))
    assert t.mean["data"].shape == (3, 1, 1)
    grey = cio.Transformer({"data": (1, 1, 4, 5)})
    grey.set_mean("data", np.zeros((4, 5)))
    assert grey.mean["data"].shape == (1, 4, 5)


@pytest.mark.parametrize("shape", [(4,), (1, 3, 4, 5), (2, 4, 5), ()])
def test_set_mean_rejects_shapes_that_do_not_fit(shape):
    t = make_transformer()
    with pytest.raises(ValueError, match=r"input blob \(2, 3, 4, 5\)") as err:
        t.set_mean("data", np.zeros(shape))
    assert isinstance(err.value, CaffeError)


def test_set_mean_resizes_an_elementwise_mean_of_another_size():
    # The ImageNet mean (3 x 256 x 256) for a 227 x 227 input, as BVLC's classify.py passes
    # it: scaled to [0, 1], resized by resize_image, scaled back.
    pytest.importorskip("skimage")
    rng = np.random.default_rng(5)
    mean = rng.uniform(90, 130, (3, 256, 256))
    t = cio.Transformer({"data": (1, 3, 227, 227)})
    t.set_mean("data", mean)
    lo, hi = mean.min(), mean.max()
    expected = cio.resize_image(((mean - lo) / (hi - lo)).transpose(1, 2, 0), (227, 227))
    expected = expected.transpose(2, 0, 1) * (hi - lo) + lo
    assert t.mean["data"].shape == (3, 227, 227) and t.mean["data"].dtype == np.float64
    np.testing.assert_array_equal(t.mean["data"], expected)
    # A constant mean stays that constant (BVLC's 0 / 0 made it NaN).
    t.set_mean("data", np.full((3, 256, 256), 104.0))
    assert np.all(t.mean["data"] == 104.0) and t.mean["data"].shape == (3, 227, 227)


def test_deprocess_keeps_float32():
    # Style transfer feeds deprocess's result to skimage.img_as_ubyte, which refuses a
    # float64 1.00000002 that float32 arithmetic rounds to 1.0.
    t = make_transformer((1, 3, 4, 5))
    t.set_mean("data", np.array([104.00698793, 116.66876762, 122.67891434]))
    t.set_raw_scale("data", 255.0)
    t.set_channel_swap("data", (2, 1, 0))
    image = np.ones((4, 5, 3), np.float32)
    out = t.deprocess("data", t.preprocess("data", image)[np.newaxis])
    assert out.dtype == np.float32 and out.max() <= 1.0
    assert t.deprocess("data", np.zeros((3, 4, 5))).dtype == np.float64


def test_transformer_bad_settings():
    t = make_transformer()
    with pytest.raises(CaffeError, match="'label' is not one of the net inputs"):
        t.set_raw_scale("label", 255)
    with pytest.raises(ValueError, match="must have 3 axes"):
        t.set_transpose("data", (1, 0))
    with pytest.raises(ValueError, match="must list 3 channels"):
        t.set_channel_swap("data", (1, 0))
