"""pycaffe's caffe.io: proto <-> array conversions, image loading and input preprocessing.

Images are NumPy arrays H x W x K with values in [0, 1] (RGB order) as pycaffe gives them;
a net wants K x H x W, often BGR in [0, 255] minus a mean: `Transformer` does that mapping.
resize_image uses scikit-image and SciPy as BVLC did (the io extra: pip install "pycaffe[io]").
"""
import importlib
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
        caffe_in = np.array(data, dtype=np.float32)   # a copy: the caller's array stays intact
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != in_dims:
            caffe_in = resize_image(caffe_in, in_dims)
        transpose = self.transpose.get(in_)
        if transpose is not None:
            caffe_in = caffe_in.transpose(transpose)
        channel_swap = self.channel_swap.get(in_)
        if channel_swap is not None:
            caffe_in = caffe_in[list(channel_swap), :, :]
        if self.raw_scale.get(in_) is not None:
            caffe_in = caffe_in * self.raw_scale[in_]
        if self.mean.get(in_) is not None:
            caffe_in = caffe_in - self.mean[in_]
        if self.input_scale.get(in_) is not None:
            caffe_in = caffe_in * self.input_scale[in_]
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """Invert preprocess (except the resize): K x H x W net input -> H x W x K image."""
        self._check_input(in_)
        decaf_in = np.array(data, dtype=np.float32)
        while decaf_in.ndim > 3 and decaf_in.shape[0] == 1:   # a batch of one
            decaf_in = decaf_in[0]
        if self.input_scale.get(in_) is not None:
            decaf_in = decaf_in / self.input_scale[in_]
        if self.mean.get(in_) is not None:
            decaf_in = decaf_in + self.mean[in_]
        if self.raw_scale.get(in_) is not None:
            decaf_in = decaf_in / self.raw_scale[in_]
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
        """Subtract `mean`: per channel (K,) or per pixel (K, H, W) matching the blob."""
        self._check_input(in_)
        mean = np.asarray(mean)
        k, hw = self.inputs[in_][1], self.inputs[in_][2:]
        if mean.ndim == 1 and mean.shape[0] == k:
            mean = mean[:, np.newaxis, np.newaxis]
        elif mean.ndim == 2 and k == 1 and mean.shape == hw:
            mean = mean[np.newaxis]
        elif not (mean.ndim == 3 and mean.shape == (k,) + hw):
            raise ShapeError(
                f"mean for input '{in_}' has shape {mean.shape}; it must be per-channel "
                f"({k},) or per-pixel {(k,) + hw} to fit the input blob {self.inputs[in_]}. "
                f"Average a larger mean image per channel (mean.mean(1).mean(1)) or crop it.")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        """Multiply by `scale` last, after the mean is subtracted."""
        self._check_input(in_)
        self.input_scale[in_] = scale


# -- image I/O -------------------------------------------------------------------------
# Pillow modes and the value that maps to 1.0 (as skimage.img_as_float scales integers).
_INTEGER_MODES = {"L": 255.0, "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0,
                  "I;16N": 65535.0, "I": 2147483647.0}


# skimage.color.rgb2gray's luminance weights: load_image(color=False) reads colour files as
# BVLC's skimage.io.imread(as_grey=True) did.
_GREY = np.array([0.2125, 0.7154, 0.0721])


def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image file as float32 H x W x 3 (RGB) or, with color=False, H x W x 1 intensity,
    with values in [0, 1]. Alpha is dropped for colour; grey is tiled when color=True; a
    colour file read with color=False is converted as skimage's rgb2gray (alpha blended onto
    white first, as skimage's imread does). The file is streamed to the decoder."""
    from .data.image import open_image, open_image_file
    with open_image_file(filename) as f, open_image(f, f"image file '{filename}'") as img:
        mode = img.mode
        if mode == "1":
            arr = np.asarray(img, dtype=np.float32)
        elif mode in _INTEGER_MODES or mode == "F":
            arr = np.asarray(img).astype(np.float32) / _INTEGER_MODES.get(mode, 1.0)
        elif mode == "LA":
            arr = np.asarray(img.getchannel("L"), dtype=np.float32) / 255.0
        elif color:
            arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        else:
            alpha = mode in ("RGBA", "PA") or "transparency" in img.info
            rgb = np.asarray(img.convert("RGBA" if alpha else "RGB"), dtype=np.float64) / 255.0
            if alpha:
                rgb = rgb[..., :3] * rgb[..., 3:] + (1.0 - rgb[..., 3:])
            arr = (rgb @ _GREY).astype(np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, np.newaxis]
        if color:
            arr = np.tile(arr, (1, 1, 3))
    return arr


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
        if im_max <= im_min:
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
