"""pycaffe's caffe.io: proto <-> array conversions, image loading and input preprocessing.

Images are NumPy arrays H x W x K with values in [0, 1] (RGB order) as pycaffe gives them;
a net wants K x H x W, often BGR in [0, 255] minus a mean: `Transformer` does that mapping.
resize_image uses scikit-image and SciPy as BVLC did (the io extra: pip install "pycaffe[io]").
"""
import importlib
from typing import List, Mapping, Optional, Sequence

import numpy as np

from .blob import checked_count
from .data.skimage_reader import load_image  # noqa: F401  (caffe.io.load_image)
from .errors import CaffeError
from .proto import caffe_pb2


class ShapeError(CaffeError, ValueError):
    """An array whose shape does not fit what it is used for (pycaffe raised ValueError)."""


# -- proto / datum / ndarray conversion --------------------------------------------
def _has_legacy_shape(blob):
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blobproto_to_array(blob: caffe_pb2.BlobProto, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an ndarray in the shape the proto declares: float32,
    or float64 for a blob stored as double_data."""
    what = "diff" if return_diff else "data"
    doubles = getattr(blob, "double_" + what)
    # float32 from the float fields, as BVLC's np.array(blob.data) gives it under today's
    # protobuf; float64 from the double fields (which BVLC's reader ignored).
    values = np.array(doubles, dtype=np.float64) if len(doubles) else \
        np.array(getattr(blob, what), dtype=np.float32)
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
# load_image reads as BVLC's scikit-image reader did (caffe/data/skimage_reader.py).


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
