"""pycaffe's caffe.io: proto <-> array conversions, image loading and input preprocessing.

Images are NumPy arrays H x W x K with values in [0, 1] (RGB order) as pycaffe gives them;
a net wants K x H x W, often BGR in [0, 255] minus a mean: `Transformer` does that mapping.
resize_image uses scikit-image and SciPy as BVLC did (the io extra: pip install "pycaffe[io]").
"""
import importlib
import io
import os
import re
import urllib.parse
import urllib.request
from typing import List, Mapping, Optional, Sequence

import numpy as np

from .blob import checked_count
from .errors import CaffeError
from .proto import caffe_pb2


class ShapeError(CaffeError, ValueError):
    """An array whose shape does not fit what it is used for (pycaffe raised ValueError)."""


# -- proto / datum / ndarray conversion --------------------------------------------
def _has_legacy_shape(blob):
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an ndarray in the shape the proto declares."""
    what = "diff" if return_diff else "data"
    doubles = getattr(blob, "double_" + what)
    values = np.array(doubles if len(doubles) else getattr(blob, what), dtype=np.float64)
    if _has_legacy_shape(blob):
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(blob.shape.dim)
    # Counted with Python ints: numpy's product wraps around on a hostile shape.
    count = checked_count(shape, "BlobProto", ShapeError)
    if count != values.size:
        raise ShapeError(f"BlobProto declares shape {shape} ({count} values) but "
                         f"holds {values.size} {what} values")
    return values.reshape(shape)


def array_to_blobproto(arr: np.ndarray, diff: Optional[np.ndarray] = None) -> caffe_pb2.BlobProto:
    """An ndarray (any number of axes) as a BlobProto; `diff`, if given, must match its shape."""
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(arr.astype(np.float64).ravel().tolist())
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ShapeError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        blob.diff.extend(diff.astype(np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist: Sequence[np.ndarray]) -> bytes:
    """A list of ndarrays as a serialized BlobProtoVector."""
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(arr) for arr in arraylist])
    return vec.SerializeToString()


# pycaffe's historical (misspelt) name, still used by old scripts.
arraylist_to_blobprotovecor_str = arraylist_to_blobprotovector_str


def blobprotovector_str_to_arraylist(data: bytes) -> List[np.ndarray]:
    """A serialized BlobProtoVector as a list of ndarrays."""
    from .formats import parse_binary
    vec = parse_binary(data, caffe_pb2.BlobProtoVector())
    return [blobproto_to_array(blob) for blob in vec.blobs]


def array_to_datum(arr: np.ndarray, label: Optional[int] = None) -> caffe_pb2.Datum:
    """A K x H x W array as a Datum: uint8 arrays as raw bytes, others as float_data."""
    from .data.db import array_to_datum as to_datum
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ShapeError(f"array_to_datum needs a 3-D (channels, height, width) array, "
                         f"got shape {arr.shape}")
    datum = to_datum(arr)
    if label is not None:
        datum.label = label       # as pycaffe: an int, or protobuf's TypeError
    return datum


def datum_to_array(datum: caffe_pb2.Datum) -> np.ndarray:
    """A Datum's values as a K x H x W array (uint8 for byte data); the label is datum.label.

    An encoded Datum (PNG/JPEG bytes) is decoded as the data layers decode it: colour comes
    out BGR. Float data comes out float64, as pycaffe's did.
    """
    if datum.encoded:
        from .data.image import decode_image, hwc_to_chw
        return hwc_to_chw(decode_image(datum.data, None, "encoded Datum"))
    from .data.db import datum_values
    shape, values = datum_values(datum, np.float64)
    count = checked_count(shape, "Datum", ShapeError)
    if values.size != count:
        raise ShapeError(f"Datum declares shape {shape} but holds {values.size} values")
    return values.reshape(shape).copy()


def _resize_mean(mean, hw):
    """A K x H' x W' mean resized to K x H x W as BVLC's set_mean does: scaled to [0, 1],
    resized, scaled back (in the mean's own type arithmetic)."""
    m_min, m_max = mean.min(), mean.max()
    if not m_max > m_min:
        # A constant mean stays constant (BVLC's 0 / 0 made it NaN).
        return np.full((mean.shape[0],) + tuple(hw), m_min,
                       dtype=np.result_type(np.float32, mean.dtype))
    normal_mean = (mean - m_min) / (m_max - m_min)
    return resize_image(normal_mean.transpose((1, 2, 0)), hw).transpose((2, 0, 1)) * \
        (m_max - m_min) + m_min


# -- pre-processing ------------------------------------------------------------------
class Transformer:
    """Maps H x W x K images in [0, 1] to net inputs K x H x W, and back.

    inputs: {input blob name: blob shape}, e.g. {'data': net.blobs['data'].data.shape}.
    preprocess applies, in order: resize to the blob's H x W, transpose, channel swap,
    raw scale, mean subtraction, input scale.
    """

    def __init__(self, inputs: Mapping[str, Sequence[int]]) -> None:
        self.inputs = {name: tuple(int(d) for d in shape) for name, shape in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check_input(self, in_):
        if in_ not in self.inputs:
            raise CaffeError(f"'{in_}' is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """(H' x W' x K) image -> (K x H x W) float32 net input for blob `in_`."""
        self._check_input(in_)
        # A copy: BVLC's astype(copy=False) let the in-place steps below write into the
        # caller's float32 array.
        caffe_in = np.array(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        # In place, as BVLC: the input stays float32 whatever the settings' types, each
        # step rounded to float32 as BVLC's are.
        if self.raw_scale.get(in_) is not None:
            caffe_in *= self.raw_scale[in_]
        if self.mean.get(in_) is not None:
            caffe_in -= self.mean[in_]
        if self.input_scale.get(in_) is not None:
            caffe_in *= self.input_scale[in_]
        return np.ascontiguousarray(caffe_in)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Invert preprocess (except the resize): K x H x W net input -> H x W x K image.

        The image keeps the input's float type (float32 for a blob's data), as BVLC's
        in-place arithmetic does: a float64 result breaks skimage.img_as_ubyte on values
        like 1.00000002."""
        self._check_input(in_)
        decaf_in = np.array(data)
        if decaf_in.dtype.kind != "f":
            decaf_in = decaf_in.astype(np.float32)
        # BVLC squeezes every axis of size 1; only a batch of one is dropped here, so that
        # a one-channel or one-row image keeps its axes.
        while decaf_in.ndim > 3 and decaf_in.shape[0] == 1:
            decaf_in = decaf_in[0]
        if self.input_scale.get(in_) is not None:
            decaf_in /= self.input_scale[in_]
        if self.mean.get(in_) is not None:
            decaf_in += self.mean[in_]
        if self.raw_scale.get(in_) is not None:
            decaf_in /= self.raw_scale[in_]
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            decaf_in = decaf_in[np.argsort(channel_swap), :, :]
        transpose = self.transpose.get(in_)
        if transpose is not None:
            decaf_in = decaf_in.transpose(np.argsort(transpose))
        return decaf_in

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        """Axis order taking an input image to the blob's, e.g. (2, 0, 1) for HWK -> KHW."""
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ShapeError(f"transpose order {tuple(order)} for input '{in_}' must have "
                             f"{len(self.inputs[in_]) - 1} axes (the blob is "
                             f"{self.inputs[in_]} with the batch axis)")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        """Channel order applied after transpose, e.g. (2, 1, 0) maps RGB to BGR."""
        self._check_input(in_)
        channels = self.inputs[in_][1]
        if len(order) != channels:
            raise ShapeError(f"channel swap {tuple(order)} for input '{in_}' must list "
                             f"{channels} channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        """Multiply raw inputs by `scale` first (255 for models trained on [0, 255])."""
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Subtract `mean`: per channel (K,), or per pixel (K, H, W) or (H, W) for one
        channel. A per-pixel mean of another height and width is resized to the blob's, as
        BVLC does (the 256 x 256 ImageNet mean for a 227 x 227 input): scaled to [0, 1],
        resized by resize_image and scaled back."""
        self._check_input(in_)
        mean = np.asarray(mean)
        k, hw = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1:
            if mean.shape[0] != k:
                raise ShapeError(f"mean for input '{in_}' has {mean.shape[0]} channel values; "
                                 f"the input blob {self.inputs[in_]} has {k} channels")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if mean.ndim == 2:
                mean = mean[np.newaxis]
            if mean.ndim != 3 or mean.shape[0] not in (1, k):
                raise ShapeError(
                    f"mean for input '{in_}' has shape {mean.shape}; it must be per-channel "
                    f"({k},) or per-pixel ({k}, H, W) (any H x W: it is resized to "
                    f"{hw}) to fit the input blob {self.inputs[in_]}")
            if mean.shape[1:] != hw or mean.shape[0] != k:
                mean = _resize_mean(mean, hw)
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply by `scale` last, after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# -- image I/O -------------------------------------------------------------------------
# BVLC's load_image is skimage.img_as_float(skimage.io.imread(filename, as_grey=...)); the
# reader is imageio's Pillow plugin (tifffile for names ending .tif/.tiff), and URLs are
# downloaded first. load_image reproduces that reader on Pillow alone, so that images load
# without the io extra, with the image size limits of caffe.data.image applied.
_URL = re.compile(r"http://|https://|ftp://|file://|file:\\")   # skimage.io's test
_TIFF_SUFFIXES = (".tif", ".tiff")
# skimage.color.rgb2gray's luminance weights (ITU-R 709).
_GREY = (0.2125, 0.7154, 0.0721)


def load_image(filename, color: bool = True) -> np.ndarray:
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
    source, stream, tiff = _image_input(filename)
    with stream:
        if tiff:
            tifffile = _optional_module("tifffile")
            if tifffile is not None:
                arr = _read_tiff(tifffile, stream, source)
                return _bvlc_image(arr, color, source)
        from .data.image import open_image
        with open_image(stream, source, exif_orientation=False) as img:
            arr = _pillow_pixels(img, source)
    return _bvlc_image(arr, color, source)


def _optional_module(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _image_input(filename):
    """(name for messages, binary stream, read as TIFF by tifffile?) for a path, URL or
    file object."""
    from .data.image import ImageError, open_image_file
    if hasattr(filename, "read"):
        name = getattr(filename, "name", None)
        source = f"image file '{name}'" if isinstance(name, str) else "image file object"
        # The caller's file stays open: only a wrapper is closed after reading.
        return source, _Unclosed(filename), False
    if isinstance(filename, str) and _URL.match(filename):
        source = f"image URL '{filename}'"
        suffix = os.path.splitext(urllib.parse.urlparse(filename).path)[1].lower()
        return source, io.BytesIO(_download(filename, source, ImageError)), \
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


def _download(url, source, error):
    from .data.image import MAX_IMAGE_BYTES
    try:
        with urllib.request.urlopen(url) as response:
            data = response.read(MAX_IMAGE_BYTES + 1)
    except (OSError, ValueError) as e:   # URLError and HTTPError are OSErrors
        raise error(f"could not download {source}: {getattr(e, 'reason', None) or e}") \
            from None
    if len(data) > MAX_IMAGE_BYTES:
        raise error(f"{source}: more than the limit {MAX_IMAGE_BYTES} bytes "
                    f"(caffe.data.image.MAX_IMAGE_BYTES)")
    return data


class _Unclosed:
    """A caller's file object, used as a stream that closing leaves open."""

    def __init__(self, f):
        self.f = f

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self.f

    def __exit__(self, *exc):
        return False


def _read_tiff(tifffile, stream, source):
    """The first page of a TIFF as tifffile gives it, under the image size limits."""
    from .data.image import MAX_IMAGE_PIXELS, ImageError
    try:
        with tifffile.TiffFile(stream) as tif:
            page = tif.pages[0]
            pixels = int(np.prod(page.shape[:2] if page.shape[-1] in (3, 4) or
                                 len(page.shape) < 3 else page.shape[1:3], dtype=object))
            if pixels > MAX_IMAGE_PIXELS:
                raise ImageError(f"{source}: image of shape {page.shape}, more than the "
                                 f"limit {MAX_IMAGE_PIXELS} pixels "
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
    from .data.image import ImageError
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
    raise ShapeError(f"image samples of type {arr.dtype} are not supported")


def _bvlc_image(arr, color, source):
    """BVLC's load_image on decoded pixels: float in [0, 1], H x W x 3 or H x W x 1."""
    if arr.ndim == 3 and arr.shape[2] == 2:
        arr = arr[:, :, 0]          # grey with alpha: the grey
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (1, 3, 4)):
        raise ShapeError(f"{source}: decoded to an array of shape {arr.shape}, not an "
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


def _image_extra(module):
    """Import a scikit-image/SciPy module, or say which extra provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise CaffeError(f"caffe.io.resize_image needs scikit-image ({module} is missing): "
                         f"pip install 'pycaffe[io]'") from None


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Resize an H x W x K image to new_dims (height, width) with spline order
    interp_order (0 nearest, 1 linear: the default, 2 quadratic, 3 cubic, ...).

    As BVLC: 1- and 3-channel images are scaled to [0, 1] and resized by scikit-image's
    transform.resize (mode 'constant'), other channel counts by SciPy's ndimage.zoom; a
    constant image stays constant. Returns float32. Needs the io extra (scikit-image).
    """
    im = np.asarray(im)
    if im.ndim != 3:
        raise ShapeError(f"resize_image needs an H x W x K image, got shape {im.shape}")
    if any(int(d) <= 0 for d in new_dims[:2]):
        raise ShapeError(f"resize_image to {tuple(new_dims)}: dimensions must be positive")
    if im.shape[-1] == 1 or im.shape[-1] == 3:
        im_min, im_max = im.min(), im.max()
        if not im_max > im_min:    # a constant image (or one with NaN), as BVLC tests it
            return np.full((new_dims[0], new_dims[1], im.shape[-1]), im_min, dtype=np.float32)
        resize = _image_extra("skimage.transform").resize
        im_std = (im - im_min) / (im_max - im_min)
        resized_std = resize(im_std, new_dims, order=interp_order, mode="constant")
        resized_im = resized_std * (im_max - im_min) + im_min
    else:
        zoom = _image_extra("scipy.ndimage").zoom
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized_im = zoom(im, scale + (1,), order=interp_order)
    return resized_im.astype(np.float32)


def oversample(images: np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """Ten crops per image: four corners and centre, then the same five mirrored.

    images: iterable of H x W x K arrays of one shape; crop_dims: (height, width).
    Returns a (10 * N) x h x w x K float32 array.
    """
    images = np.asarray([np.asarray(im) for im in images], dtype=np.float32)
    if images.ndim != 4:
        raise ShapeError(f"oversample needs H x W x K images of one shape, got an array of "
                         f"shape {images.shape}")
    ch, cw = (int(d) for d in crop_dims[:2])
    h, w = images.shape[1:3]
    if ch > h or cw > w:
        raise ShapeError(f"crop {ch}x{cw} is larger than the images ({h}x{w})")
    # The centre crop starts at floor(centre - crop / 2), as pycaffe's truncation gives.
    starts = [(0, 0), (0, w - cw), (h - ch, 0), (h - ch, w - cw),
              (int(h / 2.0 - ch / 2.0), int(w / 2.0 - cw / 2.0))]
    crops = np.stack([images[:, y:y + ch, x:x + cw] for y, x in starts], axis=1)
    crops = np.concatenate([crops, crops[:, :, :, ::-1]], axis=1)
    return np.ascontiguousarray(crops.reshape((-1, ch, cw, images.shape[-1])))
