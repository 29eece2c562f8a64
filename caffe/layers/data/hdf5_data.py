"""HDF5Data reads rows of HDF5 files; HDF5Output writes its bottoms to one."""
import numpy as np
import torch

from ... import formats, hdf5, parallel
from ...formats import h5py
from ...data.transformer import draw_seed
from ...errors import DataError
from ...layer import Layer, register_layer
from .base import BaseDataLayer, np_dtype


@register_layer
class HDF5DataLayer(BaseDataLayer):
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
            with hdf5.open_file(path, DataError) as f:
                datasets = []
                for name in self.param.top:
                    ds = hdf5.member(f, name, path, DataError)
                    if not isinstance(ds, h5py.Dataset):
                        raise DataError(f"HDF5 file '{path}' has no dataset '{name}' (one "
                                        f"dataset per top, named as the top)")
                    if ds.ndim < 1 or ds.dtype.kind not in "biuf":
                        raise DataError(f"HDF5 dataset '{name}' in '{path}' must be a numeric "
                                        f"array of at least 1 dimension, got {ds.dtype} "
                                        f"{ds.shape}")
                    self._check_row_shape(name, path, tuple(ds.shape[1:]))
                    datasets.append((ds, np_dtype(self.dtype)))
                # All tops inspected (size, storage, filters) before any is read.
                arrays = hdf5.read_all(datasets, path, DataError)
        except DataError:
            raise
        except formats.H5_ERRORS as e:
            raise DataError(f"cannot read HDF5 file '{path}': {e}") from None
        rows = {a.shape[0] for a in arrays}
        if len(rows) != 1:
            counts = ", ".join(f"{n} {a.shape[0]}" for n, a in zip(self.param.top, arrays))
            raise DataError(f"the datasets of '{path}' have different numbers of rows: {counts}")
        self.datasets = [torch.from_numpy(a).to(self.device, self.dtype) for a in arrays]
        self.rows = rows.pop()
        if self.rows == 0:
            raise DataError(f"HDF5 file '{path}' has no rows")
        self._order = torch.arange(self.rows, device=self.device)
        self.current_row = 0
        self._shuffle_rows()

    def _check_row_shape(self, name, path, shape):
        """Every file's rows of a top must have the shape the top was set up with (the first
        file's): 3 values in one file and 7 in the next cannot share a batch blob."""
        known = self.__dict__.setdefault("_row_shapes", {})
        if name not in known:
            known[name] = (shape, path)
        elif known[name][0] != shape:
            first_shape, first_path = known[name]
            raise DataError(f"HDF5 dataset '{name}' in '{path}' has rows of shape {shape}, "
                            f"but in '{first_path}' {first_shape}: the files listed in "
                            f"'{self.param.hdf5_data_param.source}' must agree on each "
                            f"dataset's shape after the first axis")

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
