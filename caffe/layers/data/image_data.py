"""ImageData: images named by a list file."""
import numpy as np
import torch

from ... import parallel
from ...data.image import check_resize, read_image, read_image_list
from ...data.pipeline import BatchPipeline, check_batch
from ...data.transformer import draw_seed
from ...layer import register_layer
from .base import np_dtype, BasePrefetchingDataLayer


class _ImageListSource:
    """Images named by a list file, in list order (reshuffled every epoch if asked)."""

    rank, count, offset = 0, 1, 0   # parallel.data_shard; list entries passed so far

    def __init__(self, lines, start, param, transformer, rng, dtype):
        self.lines, self.index, self.p = lines, start, param
        self.transformer, self.rng, self.dtype = transformer, rng, dtype
        self.pipeline = BatchPipeline(transformer)

    def read(self, index):
        return self._read_entry(self.lines[index])

    def _read_entry(self, entry):
        path, label = entry
        p = self.p
        img = read_image(p.root_folder + path, p.new_height, p.new_width, p.is_color)
        return img.transpose(2, 0, 1), label, p.root_folder + path

    def _read_named(self, entry):
        img, label, name = self._read_entry(entry)
        return img, label, f"image '{name}'"

    def load_batch(self):
        entries = []
        for _ in range(self.p.batch_size):
            while self.offset % self.count != self.rank:    # worker r keeps r, r + N, ...
                self._advance()
            # Taken now: _advance reshuffles self.lines at the end of an epoch.
            entries.append(self.lines[self.index])
            self._advance()
        return self.pipeline.run(entries, self._read_named, self.dtype)

    def close(self):
        self.pipeline.close()

    def _advance(self):
        self.offset += 1
        self.index += 1
        if self.index >= len(self.lines):
            self.index = 0
            if self.rng is not None:
                self.lines = [self.lines[i] for i in self.rng.permutation(len(self.lines))]


@register_layer
class ImageDataLayer(BasePrefetchingDataLayer):
    """Images listed as `path label` lines in image_data_param.source: data and label."""

    type = "ImageData"
    exact_num_top_blobs = 2

    def make_source(self, top):
        p = self.param.image_data_param
        if (p.new_height > 0) != (p.new_width > 0):
            self.fail("new_height and new_width must be set together")
        if p.new_height > 0:
            check_resize(p.new_height, p.new_width, "new_height x new_width")
        if not p.batch_size:
            self.fail("image_data_param.batch_size must be positive")
        transformer = self.make_transformer()
        lines = read_image_list(p.source)
        if not lines:
            self.fail(f"image list '{p.source}' names no images")
        rng = None
        if p.shuffle:
            rng = np.random.default_rng(draw_seed())
            lines = [lines[i] for i in rng.permutation(len(lines))]
        start = 0
        if p.rand_skip:
            start = int(torch.randint(p.rand_skip, ()))
            if start >= len(lines):
                self.fail(f"rand_skip {p.rand_skip} drew {start}, not less than the "
                          f"{len(lines)} images listed")
        source = _ImageListSource(lines, start, p, transformer, rng, np_dtype(self.dtype))
        source.rank, source.count = parallel.data_shard(self.phase)
        img, _, name = source.read(start)
        source.pipeline.expected = img.shape
        source.pipeline.expected_name = f"image '{name}'"
        shape = transformer.output_shape(img.shape, f"image '{name}'")
        check_batch(p.batch_size, shape, np_dtype(self.dtype), f"image '{name}'")
        top[0].reshape((p.batch_size,) + shape)
        top[1].reshape((p.batch_size,))
        return source
