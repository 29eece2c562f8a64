"""What every data layer shares: no bottoms, no backward, and the prefetching base.

Data, ImageData and WindowData load batches in a background thread (caffe.data.prefetch, queue
length data_param.prefetch, as Caffe) and pass every image through the DataTransformer; Data
and ImageData decode and transform a batch on several threads (caffe.data.pipeline).
"""
import logging

import numpy as np
import torch

from ...data.prefetch import Prefetcher
from ...data.transformer import DataTransformer
from ...errors import CaffeError, DataError
from ...layer import Layer

log = logging.getLogger("caffe")


def np_dtype(dtype):
    return np.float64 if dtype == torch.float64 else np.float32


def _set_top(blob, array):
    blob.reshape(array.shape)
    if isinstance(array, torch.Tensor):
        # A page-locked batch (the pipeline's pin): the copy to the GPU overlaps the caller.
        blob.data.copy_(array, non_blocking=array.is_pinned())
        return
    if blob.device.type == "cpu" and blob.dtype in (torch.float32, torch.float64):
        # NumPy copies on this thread; torch's parallel copy stalls when the cores are busy
        # (as they are while a prefetch thread works) and gains nothing at these sizes.
        np.copyto(blob.data_numpy(), array)
    else:
        blob.data.copy_(torch.from_numpy(array))


class BaseDataLayer(Layer):
    """Base of the data layers: no bottoms, nothing to propagate."""

    exact_num_bottom_blobs = 0

    def reshape(self, bottom, top):
        """Data layers shape their tops in setup and forward."""

    def allow_force_backward(self, bottom_index):
        return False

    def _error(self, error):
        return DataError(f"layer '{self.name}' ({self.type}): {error}")


class BasePrefetchingDataLayer(BaseDataLayer):
    """Caffe's BasePrefetchingDataLayer: make_source() sets up; batches come from a thread."""

    _pipeline = None    # the source's caffe.data.pipeline.BatchPipeline, if it has one

    def setup(self, bottom, top):
        try:
            source = self.make_source(top)
        except DataError as e:
            self.fail(str(e))
        self._pipeline = pipeline = getattr(source, "pipeline", None)
        if pipeline is not None and self.device.type == "cuda":
            pipeline.pin = True
        # Every prefetching layer reads the queue length from data_param, as Caffe does.
        self.prefetcher = Prefetcher(source, self.param.data_param.prefetch,
                                     name=f"prefetch '{self.name}'")

    def make_transformer(self):
        try:
            return DataTransformer(self.param.transform_param, self.phase,
                                   dtype=np_dtype(self.dtype))
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
        if self._pipeline is not None:
            self._pipeline.give_back(data)      # copied into the top: reuse its memory
