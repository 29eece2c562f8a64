"""Images as BVLC's pycaffe loads them (caffe.io.load_image): scikit-image's reader.

BVLC's load_image is skimage.img_as_float(skimage.io.imread(filename, as_grey=...)); that
reader is imageio's Pillow plugin (tifffile for names ending .tif/.tiff), and it downloads
URLs first. This module reproduces it on Pillow alone, so that images load without the io
extra, with the size limits of caffe.data.image applied. Unlike caffe.data.image (OpenCV's
conventions, for the data layers), colour stays RGB, values are floats in [0, 1], 16-bit
samples keep their precision and EXIF orientation is not applied.
"""
import contextlib
import importlib
import io
import os
import re
import urllib.parse
import urllib.request
from typing import BinaryIO, Union

import numpy as np

# The size limits are read from caffe.data.image at each call: raising them there applies here.
from . import image
from .image import ImageError, open_image, open_image_file

_URL = re.compile(r"http://|https://|ftp://|file://|file:\\")   # skimage.io's test
_TIFF_SUFFIXES = (".tif", ".tiff")
# skimage.color.rgb2gray's luminance weights (ITU-R 709).
_GREY = (0.2125, 0.7154, 0.0721)


def load_image(filename: Union[str, "os.PathLike[str]", bytes, BinaryIO],
               color: bool = True) -> np.ndarray:
    """An image as float32 H x W x 3 (RGB) or, with color=False, H x W x 1 intensity, with
    values in [0, 1] (16-bit samples scaled by 65535, float samples as they are).

    filename: a path, a binary file object, or an http(s)/ftp/file URL, as BVLC's reader
    (scikit-image) takes. As BVLC: grey is tiled to 3 channels when color=True; alpha is
    dropped (with color=False it is first blended onto white, then weighted as skimage's
    rgb2gray); a palette image takes its palette's colours (its transparency ignored); EXIF
    orientation is not applied. Where BVLC's reader gives no image of that contract, this
    one does: grey-with-alpha is grey, CMYK is converted to RGB, an animation gives its
    first frame. TIFF files named .tif/.tiff are read by tifffile when it is installed (it
    comes with scikit-image), keeping 16-bit colour samples, as BVLC's reader did.
    """
    source, opened, tiff = _image_input(filename)
    with opened as stream:
        if tiff:
            tifffile = _optional_module("tifffile")
            if tifffile is not None:
                arr = _read_tiff(tifffile, stream, source)
                return _bvlc_image(arr, color, source)
        with open_image(stream, source, exif_orientation=False) as img:
            arr = _pillow_pixels(img, source)
    return _bvlc_image(arr, color, source)


def _optional_module(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _image_input(filename):
    """(name for messages, context giving the binary stream, read as TIFF by tifffile?)
    for a path, URL or file object."""
    if hasattr(filename, "read"):
        name = getattr(filename, "name", None)
        source = f"image file '{name}'" if isinstance(name, str) else "image file object"
        # The caller's file stays open after reading.
        return source, contextlib.nullcontext(filename), False
    if isinstance(filename, str) and _URL.match(filename):
        source = f"image URL '{filename}'"
        suffix = os.path.splitext(urllib.parse.urlparse(filename).path)[1].lower()
        return source, io.BytesIO(_download(filename, source)), \
            filename.lower().endswith(_TIFF_SUFFIXES) or suffix in _TIFF_SUFFIXES
    try:
        path = os.fspath(filename)
    except TypeError:
        raise TypeError(f"load_image takes a file name, a URL or a binary file object, got "
                        f"{type(filename).__name__}") from None
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return f"image file '{path}'", open_image_file(path), \
        path.lower().endswith(_TIFF_SUFFIXES)


def _download(url, source):
    try:
        with urllib.request.urlopen(url) as response:
            data = response.read(image.MAX_IMAGE_BYTES + 1)
    except (OSError, ValueError) as e:   # URLError and HTTPError are OSErrors
        raise ImageError(f"could not download {source}: {getattr(e, 'reason', None) or e}") \
            from None
    if len(data) > image.MAX_IMAGE_BYTES:
        raise ImageError(f"{source}: more than the limit {image.MAX_IMAGE_BYTES} bytes "
                         f"(caffe.data.image.MAX_IMAGE_BYTES)")
    return data


def _read_tiff(tifffile, stream, source):
    """The first page of a TIFF as tifffile gives it, under the image size limits."""
    try:
        with tifffile.TiffFile(stream) as tif:
            page = tif.pages[0]
            pixels = int(np.prod(page.shape[:2] if page.shape[-1] in (3, 4) or
                                 len(page.shape) < 3 else page.shape[1:3], dtype=object))
            if pixels > image.MAX_IMAGE_PIXELS:
                raise ImageError(f"{source}: image of shape {page.shape}, more than the "
                                 f"limit {image.MAX_IMAGE_PIXELS} pixels "
                                 f"(caffe.data.image.MAX_IMAGE_PIXELS)")
            arr = page.asarray()
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001  tifffile raises many types on bad bytes
        raise ImageError(f"{source} could not be decoded as TIFF: {type(e).__name__}: "
                         f"{e}") from None
    # Planar colour (3 or 4, H, W) to H x W x K, as skimage.io.imread turns it.
    if arr.ndim > 2 and arr.shape[-1] not in (3, 4) and arr.shape[-3] in (3, 4):
        arr = np.moveaxis(arr, -3, -1)
    return arr


def _pillow_pixels(img, source):
    """The pixels of a decoded Pillow image as imageio's Pillow plugin gives them."""
    try:
        if img.mode == "P":
            img = img.convert(img.palette.mode)   # imageio: the palette's own mode
        elif img.mode == "PA":
            img = img.convert("RGBA")
        elif img.mode == "I" and img.format == "PNG":
            img = img.convert("I;16")             # 16-bit PNG samples as uint16
        elif img.mode not in ("1", "L", "LA", "RGB", "RGBA", "F") and \
                not img.mode.startswith("I"):
            img = img.convert("RGB")              # CMYK, YCbCr, LAB, HSV
        return np.asarray(img)
    except (ValueError, OSError) as e:
        raise ImageError(f"{source} could not be decoded: {type(e).__name__}: {e}") from None


def _img_as_float(arr):
    """skimage.img_as_float: integers scaled by their type's maximum (times its reciprocal,
    as skimage computes it), booleans to 0/1, floats as they are."""
    if arr.dtype == np.bool_:
        return arr.astype(np.float64)
    if arr.dtype.kind in "ui":
        scaled = np.multiply(arr, 1.0 / np.iinfo(arr.dtype).max, dtype=np.float64)
        return np.maximum(scaled, -1.0, out=scaled) if arr.dtype.kind == "i" else scaled
    if arr.dtype.kind == "f":
        return arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float64)
    raise ImageError(f"image samples of type {arr.dtype} are not supported")


def _bvlc_image(arr, color, source):
    """BVLC's load_image on decoded pixels: float in [0, 1], H x W x 3 or H x W x 1."""
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[:, :, 0]          # grey with alpha: the grey
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ImageError(f"{source}: decoded to an array of shape {arr.shape}, not an "
                         f"H x W grey, RGB or RGBA image")
    img = _img_as_float(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        img = img[:, :, 0]
    if not color and img.ndim == 3:
        # skimage's as_gray: rgba2rgb (alpha over white, clipped), then rgb2gray.
        if img.shape[2] == 4:
            alpha = img[..., -1:]
            img = np.clip((1 - alpha) * 1.0 + alpha * img[..., :-1], a_min=0, a_max=1)
        img = img @ np.array(_GREY, dtype=img.dtype)
    img = img.astype(np.float32)
    if img.ndim == 2:
        img = img[:, :, np.newaxis]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return img
