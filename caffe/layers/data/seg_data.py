"""The segmentation forks' data layers: an image list with a label image per image.

ImageSegData (PSPNet / DeepLab v2): image_data_param lists `image label_image` lines;
transform_param's scale_factors (random rescale), crop_size or crop_height/crop_width (pad
with the mean and ignore_label, then a random crop in TRAIN, the centre in TEST), mirror,
mean_value and scale. Tops: data, label (N x 1 x H x W), and optionally each image's
(height, width).
DenseImageData (SegNet): dense_image_data_param lists `image label_image` lines; resized to
new_height x new_width, a random crop_height x crop_width window (the same for both), mirror;
transform_param's mean_value and scale on the image. Tops: data, label.
"""
import numpy as np
import torch

from ...data.image import read_image, resize_linear
from ...errors import DataError
from ...formats import read_text_file
from ...layer import Layer, register_layer
from ...proto import caffe_pb2


def resize_nearest(img, height, width):
    """cv::resize with INTER_NEAREST: source index floor(dst * src / dst)."""
    rows = np.minimum((np.arange(height) * (img.shape[0] / height)).astype(np.int64),
                      img.shape[0] - 1)
    cols = np.minimum((np.arange(width) * (img.shape[1] / width)).astype(np.int64),
                      img.shape[1] - 1)
    return img[rows][:, cols]


def read_pairs(source, with_label=True):
    """(image, label image) paths of a list file's lines."""
    pairs = []
    for number, line in enumerate(read_text_file(source, "image list", DataError).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if with_label and len(parts) < 2:
            raise DataError(f"{source} line {number}: '{line.strip()}' is not "
                            "'image_path label_path'")
        pairs.append((parts[0], parts[1] if len(parts) > 1 else ""))
    if not pairs:
        raise DataError(f"image list '{source}' names no images")
    return pairs


class _SegDataLayer(Layer):
    """Reads (image, label) pairs in list order, reshuffling each epoch if asked."""

    exact_num_bottom_blobs = 0
    min_top_blobs = 2
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.list_param()
        if (p.new_height > 0) != (p.new_width > 0):
            self.fail("new_height and new_width must be set together")
        if not p.batch_size:
            self.fail("batch_size must be positive")
        try:
            self.pairs = read_pairs(p.source, self.with_label())
        except DataError as e:
            self.fail(str(e))
        self.rng = np.random.default_rng(int(np.random.randint(2 ** 31)))
        if p.shuffle:
            self.pairs = [self.pairs[i] for i in self.rng.permutation(len(self.pairs))]
        self.index = int(self.rng.integers(p.rand_skip)) if p.rand_skip else 0
        t = self.param.transform_param
        if t.mean_file:
            self.fail("mean_file is not supported by this layer (give mean_value)")
        self.mean = np.asarray(t.mean_value or [0.0], np.float64)
        self.reshape_tops(top)

    def reshape(self, bottom, top):
        """Tops are shaped in setup and forward."""

    def allow_force_backward(self, bottom_index):
        return False

    def next_pair(self):
        pair = self.pairs[self.index]
        self.index += 1
        if self.index == len(self.pairs):
            self.index = 0
            if self.list_param().shuffle:
                self.pairs = [self.pairs[i] for i in self.rng.permutation(len(self.pairs))]
        return pair

    def read(self, pair):
        p = self.list_param()
        try:
            img = read_image(p.root_folder + pair[0], p.new_height, p.new_width, p.is_color)
            label = self.read_label(pair[1], img.shape[:2])
        except DataError as e:
            raise DataError(f"layer '{self.name}' ({self.type}): {e}") from e
        return img.astype(np.float64), label

    def read_label(self, name, shape):
        p = self.list_param()
        label = read_image(p.root_folder + name, color=False)[:, :, 0]
        return resize_nearest(label, *shape) if label.shape != shape else label

    def finish(self, img, label, corner, size, mirror):
        """Crop, mirror, subtract the mean and scale: (C x h x w data, 1 x h x w label)."""
        (y, x), (h, w) = corner, size
        img, label = img[y:y + h, x:x + w], label[y:y + h, x:x + w]
        if mirror:
            img, label = img[:, ::-1], label[:, ::-1]
        mean = self.mean if len(self.mean) == img.shape[2] else np.repeat(self.mean[:1],
                                                                          img.shape[2])
        data = (img - mean) * self.param.transform_param.scale
        return data.transpose(2, 0, 1), label[None].astype(np.float64)

    def mirror(self):
        return self.param.transform_param.mirror and bool(self.rng.integers(2))

    def forward(self, bottom, top):
        items = [self.load(self.next_pair()) for _ in range(self.list_param().batch_size)]
        for i, blob in enumerate(top):
            blob.reshape((len(items),) + items[0][i].shape)
            blob.data[...] = torch.from_numpy(np.stack([item[i] for item in items]))


@register_layer
class ImageSegDataLayer(_SegDataLayer):
    """PSPNet's image + label-image data layer (see the module's docstring)."""

    type = "ImageSegData"
    max_top_blobs = 3

    def list_param(self):
        return self.param.image_data_param

    def with_label(self):
        return self.list_param().label_type != caffe_pb2.ImageDataParameter.NONE

    def crop(self):
        t = self.param.transform_param
        if t.HasField("crop_height") != t.HasField("crop_width") or \
                (t.HasField("crop_size") and t.HasField("crop_height")):
            self.fail("give crop_size, or both crop_height and crop_width")
        return (t.crop_height, t.crop_width) if t.HasField("crop_height") else (t.crop_size,) * 2

    def reshape_tops(self, top):
        img, _ = self.read(self.pairs[self.index])
        h, w = self.crop() if all(self.crop()) else img.shape[:2]
        b = self.list_param().batch_size
        top[0].reshape((b, img.shape[2], h, w))
        top[1].reshape((b, 1, h, w))
        if len(top) > 2:
            top[2].reshape((b, 1, 1, 2))

    def read_label(self, name, shape):
        p = self.list_param()
        if p.label_type == caffe_pb2.ImageDataParameter.PIXEL:
            return super().read_label(name, shape)
        value = int(name) if p.label_type == caffe_pb2.ImageDataParameter.IMAGE else \
            p.ignore_label
        return np.full(shape, value, np.uint8)

    def load(self, pair):
        img, label = self.read(pair)
        t, ignore = self.param.transform_param, self.list_param().ignore_label
        dims = np.asarray(img.shape[:2], np.float64)
        if len(t.scale_factors):
            s = t.scale_factors[int(self.rng.integers(len(t.scale_factors)))]
            if s != 1:
                h, w = int(img.shape[0] * s), int(img.shape[1] * s)
                img = resize_linear(img.astype(np.uint8), h, w).astype(np.float64)
                label = resize_nearest(label, h, w)
        crop = self.crop()
        if all(crop):
            ph, pw = max(crop[0] - img.shape[0], 0), max(crop[1] - img.shape[1], 0)
            if ph or pw:
                fill = self.mean if len(self.mean) == img.shape[2] else \
                    np.repeat(self.mean[:1], img.shape[2])
                img = np.concatenate([img, np.broadcast_to(
                    fill, (ph, img.shape[1], img.shape[2]))], 0)
                img = np.concatenate([img, np.broadcast_to(
                    fill, (img.shape[0], pw, img.shape[2]))], 1)
                label = np.pad(label, ((0, ph), (0, pw)), constant_values=ignore)
            room = (img.shape[0] - crop[0], img.shape[1] - crop[1])
            corner = tuple(int(self.rng.integers(r + 1)) for r in room) \
                if self.phase == caffe_pb2.TRAIN else tuple(r // 2 for r in room)
        else:
            crop, corner = img.shape[:2], (0, 0)
        data, label = self.finish(img, label, corner, crop, self.mirror())
        return data, label, np.minimum(dims, crop).reshape(1, 1, 2)


@register_layer
class DenseImageDataLayer(_SegDataLayer):
    """SegNet's image + label-image data layer (see the module's docstring)."""

    type = "DenseImageData"

    def list_param(self):
        return self.param.dense_image_data_param

    def with_label(self):
        return True

    def reshape_tops(self, top):
        p = self.list_param()
        img, _ = self.read(self.pairs[self.index])
        h, w = (p.crop_height, p.crop_width) if p.crop_height and p.crop_width else \
            img.shape[:2]
        top[0].reshape((p.batch_size, img.shape[2], h, w))
        top[1].reshape((p.batch_size, 1, h, w))

    def load(self, pair):
        p = self.list_param()
        img, label = self.read(pair)
        size, corner = img.shape[:2], (0, 0)
        if p.crop_height and p.crop_width:
            size = (p.crop_height, p.crop_width)
            if size[0] > img.shape[0] or size[1] > img.shape[1]:
                self.fail(f"crop {size} is larger than the image {img.shape[:2]}")
            corner = tuple(int(self.rng.integers(i - c + 1)) for i, c in zip(img.shape, size))
        mirror = p.mirror and bool(self.rng.integers(2))
        return self.finish(img, label, corner, size, mirror)
