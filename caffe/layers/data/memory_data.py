"""MemoryData serves arrays given from Python; DummyData fills its tops with fillers."""
import numpy as np
import torch

from ...filler import fill
from ...layer import register_layer
from ...proto import caffe_pb2
from .base import BaseDataLayer


@register_layer
class MemoryDataLayer(BaseDataLayer):
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
class DummyDataLayer(BaseDataLayer):
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
