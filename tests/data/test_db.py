"""Databases, Datum records and images: Caffe's layouts, OpenCV's conventions, bad input."""
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from caffe.data import (DataError, array_to_datum, datum_to_array, decode_image, open_db,
                        parse_datum, read_image, read_image_list, resize_linear)
from caffe.data import db as dbmod
from caffe.proto import caffe_pb2
from tests.conftest import shared_path


def png_bytes(array, mode=None):
    out = io.BytesIO()
    Image.fromarray(array, mode).save(out, format="PNG")
    return out.getvalue()


# -- the reference databases ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["small_raw_lmdb", "small_png_lmdb", "small_raw_leveldb"])
def test_reference_records_decode_to_the_pngs(name, tmp_path):
    formats = shared_path("golden", "formats")
    lines = [line.split() for line in (formats / "small.txt").read_text().splitlines()]
    path = formats / name
    if "leveldb" in name:
        path = shutil.copytree(path, tmp_path / name)
    with open_db(path, "leveldb" if "leveldb" in name else "lmdb") as db:
        assert len(db) == 64
        records = list(db)
        assert db.get(records[5][0]) == records[5][1]
    assert [k.decode() for k, _ in records] == [f"{i:08d}_{p}" for i, (p, _) in enumerate(lines)]
    for (key, value), (file, label) in zip(records, lines):
        datum = parse_datum(value, key)
        assert datum.label == int(label) and datum.encoded == ("png" in name)
        image = datum_to_array(datum, key)
        assert image.shape == (1, 28, 28) and image.dtype == np.uint8
        np.testing.assert_array_equal(image[0], np.asarray(Image.open(formats / file)))


def test_resize_linear_is_bit_exact_with_the_reference_resized_records(tmp_path):
    """convert_imageset --resize_height=20 --resize_width=24 used OpenCV's INTER_LINEAR."""
    formats = shared_path("golden", "formats")
    copy = shutil.copytree(formats / "small_resized_leveldb", tmp_path / "db")
    pillow_worst = 0
    with open_db(copy, "leveldb") as db:
        for key, value in db:
            image = np.asarray(Image.open(formats / key.decode().split("_", 1)[1]))
            stored = datum_to_array(parse_datum(value, key), key)[0]
            np.testing.assert_array_equal(resize_linear(image[:, :, None], 20, 24)[:, :, 0],
                                          stored, err_msg=key.decode())
            pil = np.asarray(Image.fromarray(image).resize((24, 20), Image.BILINEAR))
            pillow_worst = max(pillow_worst, np.abs(pil.astype(int) - stored).max())
    # Why we do not use Pillow: its bilinear filter antialiases when shrinking.
    assert pillow_worst > 10


def test_resize_linear_special_cases():
    img = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    np.testing.assert_array_equal(resize_linear(img, 4, 4), img)
    halved = resize_linear(img, 2, 2)         # OpenCV's exact-halving area path
    s = img.astype(int)
    np.testing.assert_array_equal(halved[0, 0], (s[0, 0] + s[0, 1] + s[1, 0] + s[1, 1] + 2) >> 2)
    grown = resize_linear(np.array([[[0], [200]]], np.uint8), 1, 4)
    np.testing.assert_array_equal(grown[0, :, 0], [0, 50, 150, 200])   # edges replicate


# -- writing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_write_then_read_in_key_order(backend, tmp_path, monkeypatch):
    monkeypatch.setattr(dbmod, "LMDB_INITIAL_MAP_SIZE", 1 << 16)     # forces map growth
    path = tmp_path / "db"
    values = {f"{i:04d}": bytes([i % 256]) * 3000 for i in (5, 3, 700, 1, 42)}
    with open_db(path, backend, "new") as db:
        for key, value in values.items():
            db.put(key, value)
    with pytest.raises(DataError, match="already exists"):
        open_db(path, backend, "new")
    with open_db(path, backend, "w") as db:
        db.put("0000", b"first")
    with open_db(path, backend) as db:
        keys = [k.decode() for k, _ in db]
        assert keys == sorted(list(values) + ["0000"])
        assert db.get("0700") == values["0700"]
        with pytest.raises(DataError, match="read-only"):
            db.put("x", b"y")


def test_two_readers_of_one_lmdb_share_its_handle():
    path = shared_path("golden", "formats", "small_raw_lmdb")
    a, b = open_db(path), open_db(path)
    assert next(iter(a))[0] == next(iter(b))[0]
    a.close()
    assert len(b) == 64
    b.close()


# -- bad input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["lmdb", "leveldb"])
def test_missing_or_wrong_database_path(backend, tmp_path):
    with pytest.raises(DataError, match=f"{backend} database '.*nowhere' does not exist"):
        open_db(tmp_path / "nowhere", backend)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        open_db(tmp_path / "file", backend)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cannot be opened"):
        open_db(tmp_path / "empty", backend)
    with pytest.raises(DataError, match="unknown database backend 'rocksdb'"):
        open_db(tmp_path / "x", "rocksdb")


def test_records_that_are_not_datums():
    with pytest.raises(DataError, match="record 'k1' is not a Datum"):
        parse_datum(b"\xff\xff\xff\xff", b"k1")
    blob = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=2, data=[1, 2])
    with pytest.raises(DataError, match="record 'k2' is not a Datum: it holds no pixel data"):
        parse_datum(blob.SerializeToString(), b"k2")


def test_datum_sizes_must_fit_the_data():
    datum = caffe_pb2.Datum(channels=1, height=3, width=3, data=b"\0" * 8)
    with pytest.raises(DataError, match="record 'k': Datum says 1x3x3 = 9 values but holds 8"):
        datum_to_array(datum, b"k")
    datum = caffe_pb2.Datum(channels=0, height=3, width=3, data=b"\0" * 9)
    with pytest.raises(DataError, match="invalid size"):
        datum_to_array(datum, "k")


def test_encoded_image_that_does_not_decode_names_the_record():
    datum = caffe_pb2.Datum(data=b"GIF89a broken", encoded=True)
    with pytest.raises(DataError, match="record 'cat.jpg' could not be decoded"):
        datum_to_array(datum, b"cat.jpg")


def test_image_file_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="could not open or find image file '.*none.png'"):
        read_image(tmp_path / "none.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="image file '.*bad.png' could not be decoded"):
        read_image(tmp_path / "bad.png")


def test_image_list_lines(tmp_path):
    good = tmp_path / "good.txt"
    good.write_text("a b/c.png 3\n\nd.jpg -1\r\n")
    assert read_image_list(good) == [("a b/c.png", 3), ("d.jpg", -1)]
    for line in ("nolabel.png", "x.png label"):
        bad = tmp_path / "bad.txt"
        bad.write_text(f"ok.png 1\n{line}\n")
        with pytest.raises(DataError, match=f"bad.txt line 2: '{line}' is not 'path label'"):
            read_image_list(bad)
    with pytest.raises(DataError, match="cannot read image list"):
        read_image_list(tmp_path / "missing.txt")


# -- Datum and image conversions ------------------------------------------------------------------
def test_array_datum_round_trip():
    raw = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    datum = array_to_datum(raw, 5)
    assert (datum.channels, datum.height, datum.width, datum.label) == (2, 3, 4, 5)
    np.testing.assert_array_equal(datum_to_array(parse_datum(datum.SerializeToString())), raw)
    floats = raw.astype(np.float32) / 3
    back = datum_to_array(parse_datum(array_to_datum(floats).SerializeToString()))
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, floats)
    with pytest.raises(DataError, match="3-D"):
        array_to_datum(np.zeros((2, 2)))


def test_decode_modes_follow_opencv():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [10, 20, 30]]], dtype=np.uint8)
    data = png_bytes(rgb)
    np.testing.assert_array_equal(decode_image(data)[0], rgb[0, :, ::-1])     # BGR
    grey = decode_image(data, color=False)
    assert grey.shape == (1, 3, 1)
    np.testing.assert_array_equal(grey[0, :, 0], [76, 150, 18])   # cvtColor weights
    g = np.array([[0, 128, 255]], dtype=np.uint8)
    assert decode_image(png_bytes(g)).shape == (1, 3, 1)          # native grey stays grey
    np.testing.assert_array_equal(decode_image(png_bytes(g), color=True)[0], np.repeat(
        g[0][:, None], 3, axis=1))
    rgba = np.dstack([rgb, np.full((1, 3), 7, np.uint8)])
    np.testing.assert_array_equal(decode_image(png_bytes(rgba))[0], rgb[0, :, ::-1])
    deep = np.array([[0, 0x1234, 0xFFFF]], dtype=np.uint16)
    np.testing.assert_array_equal(decode_image(png_bytes(deep))[0, :, 0], [0, 0x12, 0xFF])
