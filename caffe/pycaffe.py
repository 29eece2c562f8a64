"""pycaffe's views of a Net: its layers (net.layers) and name -> blob tables (net.blobs,
net.params), as BVLC's pycaffe shows them; caffe.Net builds them."""
from collections import OrderedDict

import numpy as np

from .layers.python_layer import BlobVec


class PyLayer:
    """pycaffe's face of a layer: `type`, `blobs` as NumPy-backed views, and the calls."""

    def __init__(self, layer, bottom, top):
        self._layer, self._bottom, self._top = layer, bottom, top

    type = property(lambda self: self._layer.type)
    name = property(lambda self: self._layer.name)
    # BVLC's BlobVec: indexable NumPy-faced blobs, grown with add_blob(*shape).
    blobs = property(lambda self: BlobVec(self._layer))

    def setup(self, bottom=None, top=None):
        self._layer.layer_setup(self._bottom, self._top)

    def reshape(self, bottom=None, top=None):
        self._layer.reshape(self._bottom, self._top)

    def forward(self, bottom=None, top=None):
        self._layer.forward(self._bottom, self._top)

    def backward(self, top=None, propagate_down=None, bottom=None):
        self._layer.backward(self._top, propagate_down or [True] * len(self._bottom),
                             self._bottom)

    def __getattr__(self, name):
        # pycaffe scripts call their own methods on Python layers through net.layers.
        impl = getattr(self._layer, "impl", None)
        if impl is not None and not name.startswith("__"):
            return getattr(impl, name)
        raise AttributeError(f"layer '{self._layer.name}' has no attribute '{name}'")

    def __repr__(self):
        return f"<Layer '{self.name}' ({self.type})>"


class BlobDict(OrderedDict):
    """An ordered name -> blob mapping that prints as a table of shapes."""

    def __repr__(self):
        rows = [f"  {name:<30} {_shape_of(v)}" for name, v in self.items()]
        return "\n".join([f"{type(self).__name__}({len(self)} entries)"] + rows)


def collect(values, batch_value):
    """Gather one batch's output: per-item rows, or one value for a scalar (loss) output."""
    if np.ndim(batch_value):
        values.extend(batch_value.copy())
    else:
        values.append(batch_value.copy())


def _shape_of(value):
    if isinstance(value, list):
        return "  ".join(str(tuple(b.shape)) for b in value)
    return str(tuple(value.shape))
