"""DataTransformer: Caffe's preprocessing of each image, in Caffe's order of operations.

For every C x H x W image:   out = (crop(mirror(x)) - crop(mirror(mean))) * scale
  1. crop to crop_size x crop_size: a random offset in TRAIN, the centre in TEST;
  2. mirror (flip left-right) with probability 1/2 when `mirror` is set (any phase);
  3. subtract the mean: mean_file (a full-size H x W mean image, cropped and flipped with the
     image, so each pixel loses the mean of its own source position) or mean_value (one value,
     or one per channel);
  4. multiply by scale.
Random draws per image, in this order: mirror (if `mirror`), then the crop's row offset and
column offset (if cropping in TRAIN), each from the transformer's own generator: it is seeded once
from torch's global generator, so caffe.set_random_seed makes data layers reproducible even
though they run in a background thread (Caffe seeds its prefetch thread the same way).
"""
import numpy as np
import torch

from .. import formats
from ..blob_proto import proto_shape
from ..errors import DataError
from ..proto import caffe_pb2


def draw_seed():
    """A seed for a data layer's own generator, drawn from torch's global generator."""
    return int(torch.randint(0, 2 ** 62, ()).item())


def load_mean(path):
    """A mean .binaryproto as a C x H x W float32 array (Caffe's 1 x C x H x W BlobProto)."""
    blob = formats.read_binaryproto(path)
    shape = proto_shape(blob)
    values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, np.float32)
    if len(shape) == 4:
        shape = shape[1:] if shape[0] == 1 else None
    if shape is None or len(shape) != 3 or values.size != np.prod(shape):
        raise DataError(f"{path}: a mean file holds one 1 x C x H x W image, got shape "
                        f"{proto_shape(blob)} with {values.size} values")
    return values.reshape(shape)


class DataTransformer:
    """Crop, mirror, mean subtraction and scale for a TransformationParameter."""

    def __init__(self, param, phase=caffe_pb2.TRAIN, seed=None, dtype=np.float32):
        if param.HasField("mean_file") and len(param.mean_value):
            raise DataError("specify either mean_file or mean_value, not both")
        if param.force_color and param.force_gray:
            raise DataError("specify either force_color or force_gray, not both")
        self.param, self.phase, self.dtype = param, phase, np.dtype(dtype)
        self.mean = load_mean(param.mean_file) if param.HasField("mean_file") else None
        self.mean_values = np.asarray(param.mean_value, dtype=self.dtype)
        # How to decode encoded images: force colour (True), force grey (False) or native.
        self.color = True if param.force_color else (False if param.force_gray else None)
        self.random_crop = bool(param.crop_size) and phase == caffe_pb2.TRAIN
        self.needs_rand = param.mirror or self.random_crop
        if seed is None:
            seed = draw_seed() if self.needs_rand else 0
        self.rng = np.random.default_rng(seed)

    def output_shape(self, shape, name="image"):
        """The C x h x w shape a C x H x W input takes; DataError when it cannot be transformed."""
        c, height, width = shape
        crop = self.param.crop_size
        if crop and (height < crop or width < crop):
            raise DataError(f"{name} is {height}x{width}, smaller than crop_size {crop}")
        if self.mean is not None and tuple(self.mean.shape) != (c, height, width):
            m = self.mean.shape
            raise DataError(
                f"{name} is {c}x{height}x{width} (channels x height x width) but the mean_file "
                f"is {m[0]}x{m[1]}x{m[2]}; the mean must have the full image size (it is "
                f"cropped along with the image)")
        if len(self.mean_values) not in (0, 1, c):
            raise DataError(f"give 1 mean_value or one per channel ({c}), not "
                            f"{len(self.mean_values)}")
        return (c, crop, crop) if crop else (c, height, width)

    def __call__(self, images, names=None):
        """Transform N images (an N x C x H x W array or a list of C x H x W arrays)."""
        n = len(images)
        if n == 0:
            raise DataError("there is no image to transform")
        names = names or [f"image {i}" for i in range(n)]
        c, h, w = out_shape = self.output_shape(images[0].shape, names[0])
        out = np.empty((n, c, h, w), dtype=self.dtype)
        if isinstance(images, np.ndarray) and not self.needs_rand:
            # Every image takes the same window: the whole batch in one pass.
            self._window(images, out, self._offsets(images.shape[2:]), False)
            return out
        for i, img in enumerate(images):
            if img.shape != images[0].shape and self.output_shape(img.shape, names[i]) \
                    != out_shape:
                raise DataError(f"{names[i]} is {img.shape[1]}x{img.shape[2]} but "
                                f"{names[0]} in the same batch is {images[0].shape[1]}x"
                                f"{images[0].shape[2]}; without crop_size a batch needs "
                                f"equal sizes")
            # One image at a time, so that it stays in cache through every step.
            mirror = bool(self.param.mirror and self.rng.integers(2))
            self._window(img, out[i], self._offsets(img.shape[1:]), mirror)
        return out

    def _offsets(self, size):
        """Top-left corner of the crop: random in TRAIN (row, then column), else centred."""
        crop, (height, width) = self.param.crop_size, size
        if not crop:
            return 0, 0
        if self.random_crop:
            top = int(self.rng.integers(height - crop + 1))
            return top, int(self.rng.integers(width - crop + 1))
        return (height - crop) // 2, (width - crop) // 2

    def _window(self, img, out, corner, mirror):
        """out = (window of img - same window of the mean) * scale; img is [N x] C x H x W."""
        (top, left), (h, w) = corner, out.shape[-2:]
        cols = slice(left + w - 1, left - 1 if left else None, -1) if mirror \
            else slice(left, left + w)
        window = img[..., top:top + h, cols]
        if self.mean is not None:
            np.subtract(window, self.mean[:, top:top + h, cols], out=out, dtype=self.dtype)
        elif len(self.mean_values):
            np.subtract(window, self.mean_values.reshape(-1, 1, 1), out=out, dtype=self.dtype)
        else:
            out[...] = window
        if self.param.scale != 1:
            out *= self.dtype.type(self.param.scale)
