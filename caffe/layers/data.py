"""Data layers: they have no bottoms, produce the net's inputs and do no backward.

Data, ImageData and WindowData load batches in a background thread (caffe.data.prefetch, queue
length data_param.prefetch, as Caffe) and pass every image through the DataTransformer; HDF5Data,
MemoryData and DummyData fill their tops in forward; HDF5Output writes its bottoms to a file.
Errors in the data (a missing file, a bad record) raise caffe.data.DataError naming the layer and
the record or file.
"""
import logging

import numpy as np
import torch

from .. import formats, parallel
from ..formats import h5py
from ..data.db import DataError, datum_to_array, open_db, parse_datum
from ..data.image import (decode_image, hwc_to_chw, read_image, read_image_bytes,
                          read_image_list, resize_linear)
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer, draw_seed, load_mean
from ..errors import CaffeError
from ..filler import fill
from ..layer import Layer, register_layer
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def _np_dtype(dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def _set_top(blob, array):
    blob.reshape(array.shape)
    if blob.device.type == "cpu" and blob.dtype in (torch.float32, torch.float64):
        # NumPy copies on this thread; torch's parallel copy stalls when the cores are busy
        # (as they are while a prefetch thread works) and gains nothing at these sizes.
        np.copyto(blob.data_numpy(), array)
    else:
        blob.data.copy_(torch.from_numpy(array))


class _DataLayer(Layer):
    """Base of the data layers: no bottoms, nothing to propagate."""

    exact_num_bottom_blobs = 0

    def reshape(self, bottom, top):
        """Data layers shape their tops in setup and forward."""

    def allow_force_backward(self, bottom_index):
        return False

    def _error(self, error):
        return DataError(f"layer '{self.name}' ({self.type}): {error}")


class _PrefetchingLayer(_DataLayer):
    """Caffe's BasePrefetchingDataLayer: make_source() sets up; batches come from a thread."""

    def setup(self, bottom, top):
        try:
            source = self.make_source(top)
        except DataError as e:
            self.fail(str(e))
        # Every prefetching layer reads the queue length from data_param, as Caffe does.
        self.prefetcher = Prefetcher(source, self.param.data_param.prefetch,
                                     name=f"prefetch '{self.name}'")

    def make_transformer(self):
        try:
            return DataTransformer(self.param.transform_param, self.phase,
                                   dtype=_np_dtype(self.dtype))
        except CaffeError as e:
            self.fail(str(e))

    def forward(self, bottom, top):
        try:
            data, label = self.prefetcher.next()
        except DataError as e:
            raise self._error(e) from e
        _set_top(top[0], data)
        if len(top) > 1:
            _set_top(top[1], label)


class _DBSource:
    """Datum records in key order, wrapping around at the end, made into transformed batches."""

    rank, count, offset = 0, 1, 0   # parallel.data_shard; records read so far

    def __init__(self, db, batch_size, transformer, skip, dtype):
        self.db, self.batch_size, self.transformer = db, batch_size, transformer
        self.skip, self.dtype = skip, dtype
        self._records = None

    def _next_record(self):
        for _ in range(2):
            if self._records is None:
                self._records = self.db.cursor()
            record = next(self._records, None)
            if record is not None:
                return record
            self._records = None
            log.info("Restarting data prefetching from start.")
        raise DataError(f"database '{self.db.path}' is empty")

    def _next_own_record(self):
        # With N workers, worker r keeps records r, r + N, ... (BVLC's DataLayer::Skip).
        while True:
            record = self._next_record()
            self.offset += 1
            if (self.offset - 1) % self.count == self.rank:
                return record

    def load_batch(self):
        for _ in range(self.skip):
            self._next_record()
        self.skip = 0
        images, labels, names = [], [], []
        for _ in range(self.batch_size):
            key, value = self._next_own_record()
            datum = parse_datum(value, key)
            images.append(datum_to_array(datum, key, self.transformer.color))
            labels.append(datum.label)
            names.append(f"record '{key.decode(errors='replace')}'")
        if not self.transformer.needs_rand and all(i.shape == images[0].shape for i in images):
            images = np.stack(images)           # the transformer's one-pass batch path
        return self.transformer(images, names), np.asarray(labels, dtype=self.dtype)

    def close(self):
        if self._records is not None:
            self._records.close()
        self.db.close()


@register_layer
class DataLayer(_PrefetchingLayer):
    """Datum records of an LMDB or LevelDB (data_param.source) in key order: data and label."""

    type = "Data"
    min_top_blobs = 1
    max_top_blobs = 2

    def make_source(self, top):
        p = self.param.data_param
        if not p.source:
            self.fail("data_param.source (the database) is not set")
        if not p.batch_size:
            self.fail("data_param.batch_size must be positive")
        transformer = self.make_transformer()
        if p.force_encoded_color and transformer.color is None:
            transformer.color = True
        db = open_db(p.source, p.backend, "r")
        try:
            first = next(db.cursor(), None)
            if first is None:
                raise DataError(f"database '{p.source}' is empty")
            key, value = first
            image = datum_to_array(parse_datum(value, key), key, transformer.color)
            name = f"record '{key.decode(errors='replace')}'"
            shape = transformer.output_shape(image.shape, name)
        except DataError:
            db.close()
            raise
        top[0].reshape((p.batch_size,) + shape)
        if len(top) > 1:
            top[1].reshape((p.batch_size,))
        # rand_skip (deprecated in Caffe): start up to rand_skip - 1 records into the database.
        skip = int(torch.randint(p.rand_skip, ())) if p.rand_skip else 0
        source = _DBSource(db, p.batch_size, transformer, skip, _np_dtype(self.dtype))
        source.rank, source.count = parallel.data_shard(self.phase)
        return source


class _ImageListSource:
    """Images named by a list file, in list order (reshuffled every epoch if asked)."""

    rank, count, offset = 0, 1, 0   # parallel.data_shard; list entries passed so far

    def __init__(self, lines, start, param, transformer, rng, dtype):
        self.lines, self.index, self.p = lines, start, param
        self.transformer, self.rng, self.dtype = transformer, rng, dtype

    def read(self, index):
        path, label = self.lines[index]
        p = self.p
        img = read_image(p.root_folder + path, p.new_height, p.new_width, p.is_color)
        return hwc_to_chw(img), label, p.root_folder + path

    def load_batch(self):
        images, labels, names = [], [], []
        for _ in range(self.p.batch_size):
            while self.offset % self.count != self.rank:    # worker r keeps r, r + N, ...
                self._advance()
            img, label, name = self.read(self.index)
            images.append(img)
            labels.append(label)
            names.append(f"image '{name}'")
            self._advance()
        if not self.transformer.needs_rand and all(i.shape == images[0].shape for i in images):
            images = np.stack(images)           # the transformer's one-pass batch path
        return self.transformer(images, names), np.asarray(labels, dtype=self.dtype)

    def _advance(self):
        self.offset += 1
        self.index += 1
        if self.index >= len(self.lines):
            self.index = 0
            if self.rng is not None:
                self.lines = [self.lines[i] for i in self.rng.permutation(len(self.lines))]


@register_layer
class ImageDataLayer(_PrefetchingLayer):
    """Images listed as `path label` lines in image_data_param.source: data and label."""

    type = "ImageData"
    exact_num_top_blobs = 2

    def make_source(self, top):
        p = self.param.image_data_param
        if (p.new_height > 0) != (p.new_width > 0):
            self.fail("new_height and new_width must be set together")
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
        source = _ImageListSource(lines, start, p, transformer, rng, _np_dtype(self.dtype))
        source.rank, source.count = parallel.data_shard(self.phase)
        img, _, name = source.read(start)
        shape = transformer.output_shape(img.shape, f"image '{name}'")
        top[0].reshape((p.batch_size,) + shape)
        top[1].reshape((p.batch_size,))
        return source


@register_layer
class HDF5DataLayer(_DataLayer):
    """Rows of the HDF5 files listed in hdf5_data_param.source; top i is the dataset named top i."""

    type = "HDF5Data"
    min_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.hdf5_data_param
        if not p.batch_size:
            self.fail("hdf5_data_param.batch_size must be positive")
        try:
            self.files = formats.read_text_file(p.source, "HDF5 file list", DataError).split()
        except DataError as e:
            self.fail(str(e))
        if not self.files:
            self.fail(f"'{p.source}' lists no HDF5 files")
        self.rng = np.random.default_rng(draw_seed()) if p.shuffle else None
        self.file_order = np.arange(len(self.files))
        if self.rng is not None:
            self.rng.shuffle(self.file_order)
        self.current_file = 0
        self.shard, self.offset = parallel.data_shard(self.phase), 0
        try:
            self._load(self.file_order[0])
        except DataError as e:
            self.fail(str(e))
        for blob, values in zip(top, self.datasets):
            blob.reshape((p.batch_size,) + tuple(values.shape[1:]))

    def _load(self, index):
        path = self.files[index]
        try:
            formats.check_regular_file(path, DataError)
            with h5py.File(path, "r") as f:
                arrays = []
                for name in self.param.top:
                    if name not in f or not isinstance(f[name], h5py.Dataset):
                        raise DataError(f"HDF5 file '{path}' has no dataset '{name}' (one "
                                        f"dataset per top, named as the top)")
                    ds = f[name]
                    if ds.ndim < 1 or ds.dtype.kind not in "biuf":
                        raise DataError(f"HDF5 dataset '{name}' in '{path}' must be a numeric "
                                        f"array of at least 1 dimension, got {ds.dtype} "
                                        f"{ds.shape}")
                    arrays.append(formats.read_hdf5_array(ds, path, ds.dtype, DataError))
        except DataError:
            raise
        except formats.H5_ERRORS as e:
            raise DataError(f"cannot read HDF5 file '{path}': {e}") from None
        rows = {a.shape[0] for a in arrays}
        if len(rows) != 1:
            counts = ", ".join(f"{n} {a.shape[0]}" for n, a in zip(self.param.top, arrays))
            raise DataError(f"the datasets of '{path}' have different numbers of rows: {counts}")
        self.datasets = [torch.from_numpy(np.asarray(a, dtype=_np_dtype(self.dtype)))
                         .to(self.device, self.dtype) for a in arrays]
        self.rows = rows.pop()
        if self.rows == 0:
            raise DataError(f"HDF5 file '{path}' has no rows")
        self._order = torch.arange(self.rows, device=self.device)
        self.current_row = 0
        self._shuffle_rows()

    def _shuffle_rows(self):
        if self.rng is not None:
            self._order = torch.from_numpy(self.rng.permutation(self.rows)).to(self.device)

    def _next_file(self):
        if len(self.files) > 1:
            self.current_file += 1
            if self.current_file == len(self.files):
                self.current_file = 0
                if self.rng is not None:
                    self.rng.shuffle(self.file_order)
            try:
                self._load(self.file_order[self.current_file])
            except DataError as e:
                raise self._error(e) from None
        else:
            self._shuffle_rows()
        self.current_row = 0

    def forward(self, bottom, top):
        batch_size, filled = self.param.hdf5_data_param.batch_size, 0
        rank, count = self.shard
        while filled < batch_size:
            # Worker r of N keeps rows r, r + N, ... counted across files (BVLC's Skip).
            start = self.current_row + (rank - self.offset) % count
            n = min(batch_size - filled, max(0, self.rows - start + count - 1) // count)
            if n:
                stop = start + (n - 1) * count + 1
                rows = self._order[start:stop:count]
                for blob, values in zip(top, self.datasets):
                    blob.data[filled:filled + n] = values[rows]
                filled += n
            else:
                stop = self.rows
            self.offset += stop - self.current_row
            self.current_row = stop
            if self.current_row == self.rows:
                self._next_file()


@register_layer
class HDF5OutputLayer(Layer):
    """Writes bottom 0 and 1 to datasets 'data' and 'label' of hdf5_output_param.file_name."""

    type = "HDF5Output"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 0

    def setup(self, bottom, top):
        self.file_name = self.param.hdf5_output_param.file_name
        if not self.file_name:
            self.fail("hdf5_output_param.file_name is not set")
        try:
            h5py.File(self.file_name, "w").close()
        except OSError as e:
            self.fail(f"cannot create '{self.file_name}': {e}")

    def reshape(self, bottom, top):
        if bottom[0].num != bottom[1].num:
            self.fail(f"data and label must have the same number of items, got "
                      f"{bottom[0].num} and {bottom[1].num}")

    def forward(self, bottom, top):
        # Caffe writes legacy 4-D (num, channels, height, width) datasets; each forward
        # replaces the previous batch (Caffe's own writer fails on a second one).
        with h5py.File(self.file_name, "a") as f:
            for name, blob in (("data", bottom[0]), ("label", bottom[1])):
                shape = tuple(blob.legacy_shape(i) for i in range(4))
                if name in f:
                    del f[name]
                f.create_dataset(name, data=blob.data.detach().cpu().numpy().reshape(shape))

    def backward(self, top, propagate_down, bottom):
        """Nothing to propagate."""


@register_layer
class MemoryDataLayer(_DataLayer):
    """Batches from arrays given by reset(data, labels) (pycaffe's net.set_input_arrays)."""

    type = "MemoryData"
    exact_num_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.memory_data_param
        self.shape = (p.channels, p.height, p.width)
        self.batch_size = p.batch_size
        if min((self.batch_size,) + self.shape) <= 0:
            self.fail("batch_size, channels, height and width must be set and positive in "
                      "memory_data_param")
        self.data = self.labels = None
        self.pos = 0
        top[0].reshape((self.batch_size,) + self.shape)
        top[1].reshape((self.batch_size,))

    def reset(self, data, labels):
        """Serve `data` (N x C x H x W) and `labels` (N values) batch by batch, from the start."""
        data, labels = np.asarray(data), np.asarray(labels)
        n = data.shape[0] if data.ndim else 0
        if data.ndim != 4 or data.shape[1:] != self.shape:
            raise self._error(f"data must be N x {' x '.join(map(str, self.shape))}, got "
                              f"shape {data.shape}")
        if labels.ndim < 1 or labels.shape[0] != n or labels.size != n:
            raise self._error(f"labels must hold one value per item ({n}), got shape "
                              f"{labels.shape}")
        if n == 0 or n % self.batch_size:
            raise self._error(f"the number of items ({n}) must be a positive multiple of the "
                              f"batch size ({self.batch_size})")
        self.data = torch.as_tensor(data).to(self.device, self.dtype)
        self.labels = torch.as_tensor(labels.reshape(n)).to(self.device, self.dtype)
        self.pos = 0

    def forward(self, bottom, top):
        if self.data is None:
            raise self._error("no data yet: call reset(data, labels) (net.set_input_arrays)")
        # As Caffe, forward serves the labels as batch x 1 x 1 x 1.
        top[0].reshape((self.batch_size,) + self.shape)
        top[1].reshape((self.batch_size, 1, 1, 1))
        end = self.pos + self.batch_size
        top[0].data.copy_(self.data[self.pos:end])
        top[1].data.copy_(self.labels[self.pos:end].view(-1, 1, 1, 1))
        self.pos = end % self.data.shape[0]


@register_layer
class DummyDataLayer(_DataLayer):
    """Tops filled by data_filler: constant fillers once at setup, the others every forward."""

    type = "DummyData"
    min_top_blobs = 1

    def setup(self, bottom, top):
        p, n = self.param.dummy_data_param, len(top)
        if len(p.data_filler) not in (0, 1, n):
            self.fail(f"give 0, 1 or {n} (one per top) data_filler, not {len(p.data_filler)}")
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            if len(p.shape):
                self.fail("give either shape or the legacy num/channels/height/width, not both")
            for field in ("num", "channels", "height", "width"):
                if len(getattr(p, field)) not in (1, n):
                    self.fail(f"give {field} once or once per top ({n}), not "
                              f"{len(getattr(p, field))} times")
            pick = (lambda f, i: f[0] if len(f) == 1 else f[i])
            shapes = [tuple(pick(getattr(p, f), i) for f in ("num", "channels", "height",
                                                               "width")) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                self.fail(f"give shape once or once per top ({n}), not {len(p.shape)} times")
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        self.fillers = list(p.data_filler) or [caffe_pb2.FillerParameter(type="constant")]
        for i, (blob, shape) in enumerate(zip(top, shapes)):
            blob.reshape(shape)
            filler = self._filler(i)
            if filler.type == "constant":
                fill(blob.data, filler)

    def _filler(self, i):
        return self.fillers[i if len(self.fillers) > 1 else 0]

    def forward(self, bottom, top):
        for i, blob in enumerate(top):
            filler = self._filler(i)
            if filler.type != "constant":
                fill(blob.data, filler)


class _WindowSource:
    """R-CNN window sampling: each batch holds background windows, then foreground windows."""

    def __init__(self, layer_param, images, fg, bg, crop, mirror, scale, mean, mean_values,
                 seed, dtype, channels):
        p = layer_param.window_data_param
        self.p, self.images, self.fg, self.bg = p, images, fg, bg
        self.crop, self.mirror, self.scale = crop, mirror, scale
        self.mean, self.mean_values, self.dtype, self.channels = mean, mean_values, dtype, channels
        self.rng = np.random.default_rng(seed)
        self.cache = {}

    def _image(self, index):
        path = self.images[index][0]
        if self.p.cache_images:
            if index not in self.cache:
                self.cache[index] = read_image_bytes(path)
            return decode_image(self.cache[index], self.channels != 1, f"image file '{path}'")
        return read_image(path, color=self.channels != 1)

    def load_batch(self):
        batch = int(self.p.batch_size)
        num_fg = int(np.float32(batch) * np.float32(self.p.fg_fraction))
        data = np.zeros((batch, self.channels, self.crop, self.crop), dtype=self.dtype)
        labels = np.zeros(batch, dtype=self.dtype)
        item = 0
        for windows, count in ((self.bg, batch - num_fg), (self.fg, num_fg)):
            for _ in range(count):
                window = windows[int(self.rng.integers(len(windows)))]
                do_mirror = bool(self.mirror and self.rng.integers(2))
                self._warp(window, do_mirror, data[item])
                labels[item] = window[1]
                item += 1
        return data, labels

    def _warp(self, window, do_mirror, out):
        index, _, _, x1, y1, x2, y2 = window
        img = self._image(index)
        rows, cols = img.shape[:2]
        crop, pad = self.crop, self.p.context_pad
        f32 = np.float32
        out_h = out_w = crop
        pad_h = pad_w = 0
        if pad > 0 or self.p.crop_mode == "square":
            # Grow the window so that, once warped to crop x crop, `pad` pixels of context
            # surround it; clip to the image and remember how much was cut on each side.
            context_scale = f32(crop) / f32(crop - 2 * pad)
            half_h, half_w = f32((y2 - y1 + 1) / 2.0), f32((x2 - x1 + 1) / 2.0)
            cx, cy = f32(x1) + half_w, f32(y1) + half_h
            if self.p.crop_mode == "square":
                half_h = half_w = max(half_h, half_w)
            x1, x2 = _round(cx - half_w * context_scale), _round(cx + half_w * context_scale)
            y1, y2 = _round(cy - half_h * context_scale), _round(cy + half_h * context_scale)
            unclipped_h, unclipped_w = y2 - y1 + 1, x2 - x1 + 1
            pad_x1, pad_y1 = max(0, -x1), max(0, -y1)
            pad_x2, pad_y2 = max(0, x2 - cols + 1), max(0, y2 - rows + 1)
            x1, x2, y1, y2 = x1 + pad_x1, x2 - pad_x2, y1 + pad_y1, y2 - pad_y2
            scale_x, scale_y = f32(crop) / f32(unclipped_w), f32(crop) / f32(unclipped_h)
            out_w = _round(f32(x2 - x1 + 1) * scale_x)
            out_h = _round(f32(y2 - y1 + 1) * scale_y)
            pad_x1, pad_x2 = _round(f32(pad_x1) * scale_x), _round(f32(pad_x2) * scale_x)
            pad_h = _round(f32(pad_y1) * scale_y)
            pad_w = pad_x2 if do_mirror else pad_x1
            out_h, out_w = min(out_h, crop - pad_h), min(out_w, crop - pad_w)
        if not (0 <= x1 <= x2 < cols and 0 <= y1 <= y2 < rows) or out_h <= 0 or out_w <= 0:
            raise DataError(f"window ({x1}, {y1}, {x2}, {y2}) does not fit image "
                            f"'{self.images[index][0]}' ({cols}x{rows})")
        warped = resize_linear(img[y1:y2 + 1, x1:x2 + 1], out_h, out_w)
        if do_mirror:
            warped = warped[:, ::-1]
        pixels = hwc_to_chw(warped).astype(self.dtype)
        region = (slice(None), slice(pad_h, pad_h + out_h), slice(pad_w, pad_w + out_w))
        if self.mean is not None:
            off = (self.mean.shape[2] - crop) // 2
            pixels -= self.mean[:, off + pad_h:off + pad_h + out_h, off + pad_w:off + pad_w + out_w]
        elif len(self.mean_values):
            pixels -= self.mean_values.reshape(-1, 1, 1)
        out[region] = pixels * self.dtype(self.scale)


def _round(x):
    """C's round(): halves away from zero."""
    return int(np.sign(x) * np.floor(np.abs(x) + 0.5))


@register_layer
class WindowDataLayer(_PrefetchingLayer):
    """R-CNN windows from window_data_param.source, warped to crop_size: data and label.

    Window file: repeated `# image_index`, image path, channels, height, width, num_windows,
    then num_windows lines `class_index overlap x1 y1 x2 y2`. Windows with overlap >=
    fg_threshold are foreground (keeping their class), below bg_threshold background (label 0).
    """

    type = "WindowData"
    exact_num_top_blobs = 2

    def make_source(self, top):
        p, t = self.param.window_data_param, self.param.transform_param
        # transform_param is Caffe's home for these; the window_data_param copies are older.
        crop = t.crop_size if t.HasField("crop_size") else p.crop_size
        mirror = t.mirror if t.HasField("mirror") else p.mirror
        mean_file = t.mean_file if t.HasField("mean_file") else p.mean_file
        scale = p.scale if p.HasField("scale") else t.scale
        if crop <= 0:
            self.fail("crop_size must be positive (the size windows are warped to)")
        if not p.batch_size:
            self.fail("window_data_param.batch_size must be positive")
        if p.crop_mode not in ("warp", "square"):
            self.fail(f"crop_mode must be 'warp' or 'square', not '{p.crop_mode}'")
        if 2 * p.context_pad >= crop:
            self.fail(f"context_pad {p.context_pad} leaves no room in crop_size {crop}")
        images, fg, bg = self._read_windows(p)
        channels = images[min(images)][1][0]
        if channels not in (1, 3):
            # Images are decoded grey or BGR: any other count could not fill the top.
            self.fail(f"window file '{p.source}': image {min(images)} declares {channels} "
                      f"channels; Caffe reads images with 1 or 3")
        num_fg = int(np.float32(p.batch_size) * np.float32(p.fg_fraction))
        if num_fg and not fg:
            self.fail(f"no foreground windows (overlap >= fg_threshold {p.fg_threshold})")
        if p.batch_size - num_fg and not bg:
            self.fail(f"no background windows (overlap < bg_threshold {p.bg_threshold})")
        dtype = _np_dtype(self.dtype)
        mean, mean_values = None, np.asarray(t.mean_value, dtype=dtype)
        if mean_file and len(mean_values):
            self.fail("specify either mean_file or mean_value, not both")
        if mean_file:
            mean = load_mean(mean_file).astype(dtype)
            # Caffe centres the crop in the mean by its width, for rows and columns alike.
            off = (mean.shape[2] - crop) // 2
            if mean.shape[0] != channels or off < 0 or mean.shape[1] < off + crop:
                self.fail(f"mean_file is {'x'.join(map(str, mean.shape))} but windows are "
                          f"warped to {channels}x{crop}x{crop}; the mean must have {channels} "
                          f"channels and be at least crop_size square")
        if len(mean_values) not in (0, 1, channels):
            self.fail(f"give 1 mean_value or one per channel ({channels}), not {len(mean_values)}")
        top[0].reshape((p.batch_size, channels, crop, crop))
        top[1].reshape((p.batch_size,))
        return _WindowSource(self.param, images, fg, bg, crop, mirror, scale, mean, mean_values,
                             draw_seed(), dtype, channels)

    def _read_windows(self, p):
        tokens = formats.read_text_file(p.source, "window file", DataError).split()
        if not tokens:
            raise DataError(f"window file '{p.source}' is empty")
        images, fg, bg, pos = {}, [], [], 0

        def take(n, what):
            nonlocal pos
            if pos + n > len(tokens):
                raise DataError(f"window file '{p.source}' ends in the middle of {what}")
            pos += n
            return tokens[pos - n:pos]

        try:
            while pos < len(tokens):
                mark, index = take(2, "an image header")
                if mark != "#":
                    raise DataError(f"window file '{p.source}': expected '# image_index', "
                                    f"found '{mark} {index}'")
                index = int(index)
                path = p.root_folder + take(1, "an image header")[0]
                size = tuple(int(v) for v in take(3, "an image size"))
                images[index] = (path, size)
                for _ in range(int(take(1, "a window count")[0])):
                    label, overlap, x1, y1, x2, y2 = take(6, "a window")
                    window = [index, int(label), float(overlap), int(x1), int(y1), int(x2),
                              int(y2)]
                    if not all(-2 ** 31 <= v < 2 ** 31 for v in window[3:]):
                        # Caffe reads them as ints; beyond, the warp arithmetic overflows.
                        raise DataError(f"window file '{p.source}': window {window[3:]} of "
                                        f"image {index} does not fit 32-bit coordinates")
                    if window[2] >= p.fg_threshold:
                        if window[1] <= 0:
                            raise DataError(f"window file '{p.source}': foreground window of "
                                            f"image {index} has class {window[1]}; foreground "
                                            f"classes start at 1")
                        fg.append(window)
                    elif window[2] < p.bg_threshold:
                        window[1], window[2] = 0, 0.0
                        bg.append(window)
        except ValueError as e:
            raise DataError(f"window file '{p.source}': not a number: {e}") from None
        log.info("Window data: %d images, %d foreground and %d background windows",
                 len(images), len(fg), len(bg))
        return images, fg, bg
