"""caffe.io.load_image's reader: paths, file objects and URLs; what it keeps and drops.

tests/test_bvlc_python.py compares it with BVLC's own load_image on randomized files.
"""
import io

import numpy as np
import pytest
from PIL import Image

from caffe import io as cio
from caffe.data import image as image_module
from caffe.data.skimage_reader import load_image


def _png(arr, **options):
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG", **options)
    return out.getvalue()


RGB = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3) * 4


def test_caffe_io_exports_it():
    assert cio.load_image is load_image


def test_file_object_is_read_and_left_open(tmp_path):
    # BVLC's web demo passes the uploaded file object itself.
    path = tmp_path / "x.png"
    path.write_bytes(_png(RGB))
    with open(path, "rb") as f:
        img = load_image(f)
        assert not f.closed
    expected = RGB / np.float32(255)
    np.testing.assert_array_equal(img, expected.astype(np.float32))
    grey = load_image(io.BytesIO(_png(RGB)), color=False)
    assert grey.shape == (4, 5, 1) and grey.dtype == np.float32


def test_path_like_and_file_url(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(_png(RGB))
    for source in (path, str(path), path.as_uri(), bytes(path)):
        np.testing.assert_array_equal(load_image(source), load_image(str(path)))


def test_exif_orientation_is_not_applied():
    # scikit-image's reader leaves the pixels as stored, unlike OpenCV (caffe.data.image).
    img = Image.fromarray(RGB)
    exif = img.getexif()
    exif[0x0112] = 6            # "rotate 90 degrees clockwise to display"
    data = _png(RGB, exif=exif.tobytes())
    assert load_image(io.BytesIO(data)).shape == (4, 5, 3)
    assert image_module.decode_image(data).shape == (5, 4, 3)


def test_sixteen_bit_grey_keeps_its_precision():
    grey16 = np.array([[0, 1, 65535], [256, 257, 40000]], dtype=np.uint16)
    img = load_image(io.BytesIO(_png(grey16)), color=False)
    np.testing.assert_array_equal(img[..., 0], (grey16 * (1 / 65535)).astype(np.float32))


def test_sixteen_bit_colour_tiff_keeps_its_precision(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    rgb16 = np.array([[[1, 2, 3], [60000, 300, 65535]]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", rgb16, photometric="rgb")
    img = load_image(str(tmp_path / "x.tif"))
    np.testing.assert_array_equal(img, (rgb16 * (1 / 65535)).astype(np.float32))


def test_palette_transparency_is_ignored_and_rgba_alpha_blended_for_grey():
    palette = Image.fromarray(RGB).quantize(4)
    out = io.BytesIO()
    palette.save(out, format="PNG", transparency=0)
    colour = np.asarray(palette.convert("RGB")) / 255.0
    grey = load_image(io.BytesIO(out.getvalue()), color=False)[..., 0]
    np.testing.assert_allclose(grey, colour @ [0.2125, 0.7154, 0.0721], rtol=1e-6)
    rgba = np.dstack([RGB, np.full((4, 5), 0, np.uint8)])     # fully transparent: white
    np.testing.assert_allclose(load_image(io.BytesIO(_png(rgba)), color=False), 1.0)
    np.testing.assert_array_equal(load_image(io.BytesIO(_png(rgba))),
                                  (RGB / np.float32(255)).astype(np.float32))


def test_errors_name_the_input(tmp_path, monkeypatch):
    with pytest.raises(OSError, match="could not open or find image file '.*nope.png'"):
        load_image(str(tmp_path / "nope.png"))
    with pytest.raises(OSError, match="could not download image URL 'file:///nonexistent"):
        load_image("file:///nonexistent/x.png")
    with pytest.raises(TypeError, match="got int"):
        load_image(7)
    monkeypatch.setattr(image_module, "MAX_IMAGE_PIXELS", 10)
    with pytest.raises(OSError, match="more than the limit 10"):
        load_image(io.BytesIO(_png(RGB)))
    tifffile = pytest.importorskip("tifffile")
    tifffile.imwrite(tmp_path / "x.tif", RGB, photometric="rgb")
    with pytest.raises(OSError, match="x.tif': image of shape .* more than the limit 10"):
        load_image(str(tmp_path / "x.tif"))


def test_load_image_bad_inputs(tmp_path):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(OSError, match="junk.png' could not be decoded"):
        load_image(str(tmp_path / "junk.png"))
    with pytest.raises(OSError, match="image file object could not be decoded"):
        load_image(io.BytesIO(b"not an image"))
    with pytest.raises(TypeError, match="file name, a URL or a binary file object, got int"):
        load_image(3)
    (tmp_path / "junk.tif").write_bytes(b"II*\x00junk")
    with pytest.raises(OSError, match="junk.tif' could not be decoded as TIFF"):
        load_image(str(tmp_path / "junk.tif"))
