"""Images as BVLC Caffe sees them through OpenCV: HxWxC uint8, colour in BGR order, grey 1 channel.

Caffe read images with cv::imread / cv::imdecode and resized them with cv::resize (INTER_LINEAR);
we decode with Pillow and reproduce OpenCV's conventions on top of it:
  * colour modes: IMREAD_COLOR gives 3 channels BGR (grey is replicated), IMREAD_GRAYSCALE one
    channel, IMREAD_ANYCOLOR ("native") keeps grey as grey and everything else as BGR;
  * colour to grey uses cv::cvtColor's fixed-point weights (JPEG: the decoder's own Y channel,
    which is what libjpeg hands OpenCV); alpha is dropped, 16-bit samples keep their high byte;
  * resize_linear reproduces cv::resize INTER_LINEAR on 8-bit images bit for bit (half-pixel
    centres, 11-bit fixed-point weights, OpenCV's rounding), which Pillow's antialiasing bilinear
    filter does not (it is up to 74 grey levels off on MNIST digits shrunk to 20x24).
"""
import io
import os
import re
import stat

import numpy as np

from .. import formats
from .._optional import LazyModule
from ..errors import DataError

# Pillow loads when the first image is read or written.
Image = LazyModule("PIL.Image")
ImageOps = LazyModule("PIL.ImageOps")

# Decoded size limit, checked on the header before any pixel is decoded, so a small file that
# declares a gigapixel image (a "decompression bomb") fails at once; raise it for huge images.
# Pillow refuses more than 2 * PIL.Image.MAX_IMAGE_PIXELS on its own: raise that one too.
MAX_IMAGE_PIXELS = 2 ** 26
# An image file larger than this is refused on its size (stat) before it is opened: 2^26
# pixels of 16-bit RGBA, uncompressed, are 512 MiB.
MAX_IMAGE_BYTES = 2 ** 30
# The formats decoded (OpenCV's imdecode set, as Pillow names them). Pillow knows many more,
# some of them rarely exercised parsers or, for EPS, a Ghostscript subprocess: none of those
# is tried on untrusted bytes.
IMAGE_FORMATS = ("BMP", "DIB", "GIF", "JPEG", "JPEG2000", "PNG", "PPM", "SUN", "TIFF", "WEBP")


class ImageError(DataError, OSError):
    """An image file that cannot be read or decoded (an OSError too, as pycaffe raised)."""

# cv::cvtColor BGR2GRAY weights for 8-bit images: 14-bit fixed point, rounded.
_GRAY_R, _GRAY_G, _GRAY_B, _GRAY_SHIFT = 4899, 9617, 1868, 14
_COEF_BITS = 11                     # OpenCV's INTER_RESIZE_COEF_BITS
_COEF_SCALE = 1 << _COEF_BITS

_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
                "tiff": "TIFF", "ppm": "PPM", "pgm": "PPM", "pbm": "PPM", "webp": "WEBP"}


def decode_image(data, color=None, source="image", contiguous=True):
    """Decode encoded image bytes as cv::imdecode would: HxWxC uint8, BGR.

    color: True (3 channels), False (1 channel) or None (native: grey stays grey);
    source names the bytes in errors ("image file 'x.png'", "record 'key'");
    contiguous=False may return a strided view (BGR over the decoder's RGB), saving a copy.
    """
    return _decode(io.BytesIO(data), color, source, contiguous)


def read_image(path, height=0, width=0, color=True):
    """Caffe's ReadImageToCVMat: decode a file, then resize to height x width if both are > 0.

    The file is streamed into the decoder, never read whole: its size is checked (stat), then
    its header (the pixel count), before any pixel is decoded."""
    with open_image_file(path) as f:
        img = _decode(f, color, f"image file '{path}'")
    if height > 0 and width > 0:
        img = resize_linear(img, height, width)
    return img


def open_image_file(path):
    """An image file opened for reading: a regular file of at most MAX_IMAGE_BYTES."""
    try:
        info = os.stat(path)
        if not stat.S_ISREG(info.st_mode):
            raise ImageError(f"image file '{path}' is not a regular file")
        if info.st_size > MAX_IMAGE_BYTES:
            raise ImageError(f"image file '{path}': {info.st_size} bytes, more than the limit "
                             f"{MAX_IMAGE_BYTES} (caffe.data.image.MAX_IMAGE_BYTES)")
        return open(path, "rb")
    except ValueError:      # a NUL inside the path
        raise ImageError(f"image file {path!r}: not a valid file name") from None
    except OSError as e:
        if isinstance(e, DataError):
            raise
        raise ImageError(f"could not open or find image file '{path}': {e.strerror or e}") \
            from None


def read_image_bytes(path):
    """The bytes of an image file (a regular file of at most MAX_IMAGE_BYTES)."""
    with open_image_file(path) as f:
        try:
            data = f.read(MAX_IMAGE_BYTES + 1)
        except OSError as e:
            raise ImageError(f"cannot read image file '{path}': {e.strerror or e}") from None
    if len(data) > MAX_IMAGE_BYTES:     # the file grew after stat()
        raise ImageError(f"image file '{path}': more than the limit {MAX_IMAGE_BYTES} bytes "
                         f"(caffe.data.image.MAX_IMAGE_BYTES)")
    return data


def open_image(stream, source, prepare=None, exif_orientation=True):
    """Pillow's image from `stream`, decoded, with the format and size limits applied.

    prepare(im), if given, runs after the header is read and before the pixels are decoded.
    exif_orientation: turn the image upright as its EXIF orientation says (OpenCV does;
    scikit-image's reader, which caffe.io.load_image follows, does not).
    Every failure inside Pillow becomes an ImageError naming `source`.
    """
    try:
        im = Image.open(stream, formats=IMAGE_FORMATS)
        pixels = im.size[0] * im.size[1]
        if pixels > MAX_IMAGE_PIXELS:
            raise ImageError(f"{source}: image of {im.size[0]}x{im.size[1]} = {pixels} pixels, "
                             f"more than the limit {MAX_IMAGE_PIXELS} "
                             f"(caffe.data.image.MAX_IMAGE_PIXELS)")
        if prepare is not None:
            prepare(im)
        im.load()
        if exif_orientation:
            # imread/imdecode honour EXIF orientation; in place: no copy when there is none.
            ImageOps.exif_transpose(im, in_place=True)
        return im
    except DataError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageError(f"{source} could not be decoded: not an image in a known format "
                         f"({', '.join(IMAGE_FORMATS)})") from None
    except Image.DecompressionBombError as e:
        raise ImageError(f"{source} could not be decoded: {e} (Pillow's own limit, "
                         f"PIL.Image.MAX_IMAGE_PIXELS)") from None
    except Exception as e:  # noqa: BLE001  Pillow's decoders raise many types on bad bytes
        raise ImageError(f"{source} could not be decoded: {type(e).__name__}: {e}") from None


def _decode(stream, color, source, contiguous=True):
    def prepare(im):
        if color is False and im.format == "JPEG" and im.mode in ("RGB", "YCbCr"):
            # OpenCV asks libjpeg for grey output, which is the luma channel itself.
            im.draft("L", im.size)

    im = open_image(stream, source, prepare)
    try:
        grey = _grey_array(im)
        if grey is None:
            # convert() of an RGB image would only copy it.
            rgb = np.asarray(im if im.mode == "RGB" else im.convert("RGB"))
    except (ValueError, OSError, MemoryError) as e:     # MemoryError: named, not bare
        raise ImageError(f"{source} could not be decoded: {type(e).__name__}: {e}") from None
    if grey is not None:
        img = grey[:, :, None]
        return np.repeat(img, 3, axis=2) if color else img
    if color is False:
        return rgb_to_gray(rgb)[:, :, None]
    return np.ascontiguousarray(rgb[:, :, ::-1]) if contiguous else rgb[:, :, ::-1]


def _grey_array(im):
    """The image as 8-bit grey if it is a grey image, else None."""
    if im.mode in ("L", "1", "LA", "La"):
        return np.asarray(im.convert("L"))
    if im.mode.startswith("I") or im.mode == "F":
        # 16-bit (or 32-bit) grey: OpenCV's 8-bit read keeps the high byte.
        values = np.asarray(im)
        if im.mode == "F":
            return np.clip(values, 0, 255).astype(np.uint8)
        return (values.astype(np.int64) >> 8).clip(0, 255).astype(np.uint8)
    return None


def rgb_to_gray(rgb):
    """cv::cvtColor(RGB2GRAY) on uint8: round((4899 R + 9617 G + 1868 B) / 2^14)."""
    rgb = rgb.astype(np.int32)
    y = rgb[..., 0] * _GRAY_R + rgb[..., 1] * _GRAY_G + rgb[..., 2] * _GRAY_B
    return ((y + (1 << (_GRAY_SHIFT - 1))) >> _GRAY_SHIFT).astype(np.uint8)


def encode_image(img, ext):
    """HxWxC BGR uint8 image to encoded bytes in the format named by a file extension."""
    fmt = _PIL_FORMATS.get(ext.lower().lstrip("."))
    if fmt is None:
        raise DataError(f"cannot encode images as '{ext}' (known: "
                        f"{', '.join(sorted(_PIL_FORMATS))})")
    rgb = img[:, :, 0] if img.shape[2] == 1 else np.ascontiguousarray(img[:, :, ::-1])
    pil = Image.fromarray(rgb)
    out = io.BytesIO()
    # OpenCV's defaults: JPEG quality 95, fast PNG compression.
    options = {"JPEG": {"quality": 95}, "PNG": {"compress_level": 1}}.get(fmt, {})
    pil.save(out, format=fmt, **options)
    return out.getvalue()


def hwc_to_chw(img):
    return np.ascontiguousarray(img.transpose(2, 0, 1))


# -- cv::resize, INTER_LINEAR, 8-bit ---------------------------------------------------
def _linear_taps(src, dst):
    """Source index and fixed-point weights of each output pixel along one axis."""
    scale = src / dst
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)
    i = np.floor(f).astype(np.int64)
    f = f - i.astype(np.float32)
    # Outside the image OpenCV takes the edge pixel with full weight.
    edge = (i < 0) | (i >= src - 1)
    f[edge] = 0
    i = np.clip(i, 0, src - 1)
    w0 = np.rint((np.float32(1) - f) * np.float32(_COEF_SCALE)).astype(np.int64)
    w1 = np.rint(f * np.float32(_COEF_SCALE)).astype(np.int64)
    return i, np.minimum(i + 1, src - 1), w0, w1


def check_resize(height, width, what="the resize target"):
    """Refuse a resize to more than MAX_IMAGE_PIXELS before any allocation: the output and
    resize_linear's int64 intermediates grow with it (100000 x 100000 asked for 224 GiB)."""
    if height <= 0 or width <= 0:
        raise DataError(f"cannot resize an image to {height}x{width}")
    if height * width > MAX_IMAGE_PIXELS:
        raise DataError(f"{what} {height}x{width} is {height * width} pixels, more than the "
                        f"limit {MAX_IMAGE_PIXELS} (caffe.data.image.MAX_IMAGE_PIXELS)")


def resize_linear(img, height, width):
    """cv::resize(img, Size(width, height)) with INTER_LINEAR on an HxWxC uint8 image."""
    src_h, src_w, channels = img.shape
    if (src_h, src_w) == (height, width):
        return img.copy()
    check_resize(height, width)
    if src_h == 2 * height and src_w == 2 * width:
        # OpenCV switches exact halving to its fast INTER_AREA path: a rounded 2x2 mean.
        s = img.astype(np.int32)
        total = s[0::2, 0::2] + s[0::2, 1::2] + s[1::2, 0::2] + s[1::2, 1::2]
        return ((total + 2) >> 2).astype(np.uint8)
    x0, x1, a0, a1 = _linear_taps(src_w, width)
    y0, y1, b0, b1 = _linear_taps(src_h, height)
    s = img.astype(np.int64)
    rows = s[:, x0] * a0[:, None] + s[:, x1] * a1[:, None]          # src_h x width x C
    r0, r1 = rows[y0], rows[y1]
    b0, b1 = b0[:, None, None], b1[:, None, None]
    # The vertical pass as OpenCV's SSE code computes it: operands pre-shifted by 4 bits and
    # 16x16->high-16 products; it differs from exact rounding by one level now and then.
    out = (((b0 * (r0 >> 4)) >> 16) + ((b1 * (r1 >> 4)) >> 16) + 2) >> 2
    return np.clip(out, 0, 255).astype(np.uint8)


_LABEL = re.compile(r"[+-]?[0-9]+")


def read_image_list(source):
    """The `path label` lines of an image list (ImageData, convert_imageset).

    As in Caffe the label follows the last space, so paths may contain spaces. Blank lines are
    skipped; a line without an integer label is an error naming the file and line.
    """
    text = formats.read_text_file(source, "image list", DataError)
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        # ASCII digits only: str.isdigit() also accepts '²', which int() refuses.
        if len(parts) != 2 or not _LABEL.fullmatch(parts[1]):
            raise DataError(f"{source} line {number}: '{line.strip()}' is not 'path label' "
                            f"(a path, a space and an integer label)")
        label = int(parts[1])
        if not -2 ** 31 <= label < 2 ** 31:
            raise DataError(f"{source} line {number}: label {label} does not fit Caffe's "
                            f"32-bit int")
        lines.append((parts[0], label))
    return lines
