"""pycaffe's Net interface: NumPy views of blobs and the forward/backward conveniences.

`caffe.Net` inherits these from `PycaffeNet`; the names and behaviour are pycaffe's.
"""
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from .blob import PyBlob
from .errors import CaffeError
from .net_guard import exclusive, used_by_threads
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


def _collect(values, batch_value):
    """Gather one batch's output: per-item rows, or one value for a scalar (loss) output."""
    if np.ndim(batch_value):
        values.extend(batch_value.copy())
    else:
        values.append(batch_value.copy())


def _shape_of(value):
    if isinstance(value, list):
        return "  ".join(str(tuple(b.shape)) for b in value)
    return str(tuple(value.shape))


def _results(views, net):
    """BVLC's views of the blobs; copies, taken before the lock is released, once several
    threads use the net (caffe.net_guard): another thread's call would overwrite the views."""
    return {k: v.copy() for k, v in views.items()} if used_by_threads(net) else views


class PycaffeNet:
    """Mixin giving the core Net pycaffe's attributes and methods."""

    if TYPE_CHECKING:       # what the core caffe.net.Net provides
        _layers: List[Any]
        _blobs: List[Any]
        blob_index: Dict[str, int]

        def reshape_all(self) -> None: ...

        def share_trained_layers_with(self, other: Any) -> None: ...

    # -- views ---------------------------------------------------------------------
    # The views are built once, as pycaffe caches them: a net's blobs and layers are fixed
    # after construction, and scripts index net.blobs in their inner loops.
    @property
    def blobs(self):
        if "_blobs_view" not in self.__dict__:
            self._blobs_view = BlobDict((n, PyBlob(b))
                                        for n, b in zip(self._blob_names, self._blobs))
        return self._blobs_view

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def params(self):
        if "_params_view" not in self.__dict__:
            self._params_view = BlobDict(
                (name, [PyBlob(b) for b in layer.blobs])
                for name, layer in zip(self._layer_names, self._layers) if layer.blobs)
        return self._params_view

    @property
    def layers(self):
        if "_layers_view" not in self.__dict__:
            self._layers_view = [PyLayer(*t)
                                 for t in zip(self._layers, self.bottom_vecs, self.top_vecs)]
        return self._layers_view

    @property
    def layer_dict(self):
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self.input_ids]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self.output_ids]

    @property
    def top_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self.top_ids))

    @property
    def bottom_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self.bottom_ids))

    def _top_ids(self, i):
        return list(self.top_ids[i])

    def _bottom_ids(self, i):
        return list(self.bottom_ids[i])

    @property
    def _inputs(self):
        return list(self.input_ids)

    @property
    def _outputs(self):
        return list(self.output_ids)

    # pycaffe's layer hooks: callback(i) around layer i's step, as Net::ForwardFromTo and
    # Net::BackwardFromTo run them (BVLC's python/train.py times layers with them).
    _before_forward = _after_forward = _before_backward = _after_backward = ()

    def before_forward(self, callback):
        """Call callback(i) before layer i's forward step."""
        self._before_forward = self._before_forward + (callback,)

    def after_forward(self, callback):
        """Call callback(i) once layer i's forward step is done."""
        self._after_forward = self._after_forward + (callback,)

    def before_backward(self, callback):
        """Call callback(i) before layer i's backward step (also where it has none)."""
        self._before_backward = self._before_backward + (callback,)

    def after_backward(self, callback):
        """Call callback(i) once layer i's backward step is done; data-parallel training
        starts all-reducing a layer's gradients from there."""
        self._after_backward = self._after_backward + (callback,)

    # -- running -------------------------------------------------------------------
    def _layer_id(self, name):
        if name not in self.layer_index:
            raise CaffeError(f"net '{self.name}' has no layer named '{name}'")
        return self.layer_index[name]

    def _end_blobs(self, end):
        if end in self.blob_index:
            return [end]
        return [self._blob_names[b] for b in self.top_ids[self._layer_id(end)]]

    def _forward(self, start, end):
        return float(self.forward_from_to(start, end))

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    @exclusive("forward")
    def forward(self, blobs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                end: Optional[str] = None, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Run forward (optionally from layer `start` to layer `end`) and return outputs."""
        blobs = list(blobs or [])
        start_ind = self._layer_id(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_id(end)
            outputs = set(self._end_blobs(end) + blobs)
        else:
            end_ind = len(self._layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise CaffeError(f"input blob arguments {sorted(kwargs)} do not match net "
                                 f"inputs {self.inputs}")
            for name, value in kwargs.items():
                blob = self._blobs[self.blob_index[name]]
                if np.shape(value)[0] != blob.shape[0]:
                    raise CaffeError(f"input '{name}' is not batch sized: {np.shape(value)[0]} "
                                     f"vs {blob.shape[0]}")
                blob.data_numpy()[...] = value
        self._forward(start_ind, end_ind)
        return _results({out: self._blobs[self.blob_index[out]].data_numpy() for out in outputs},
                        self)

    @exclusive("backward")
    def backward(self, diffs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                 end: Optional[str] = None, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Run backward (from layer `start` down to layer `end`) and return input diffs."""
        diffs = list(diffs or [])
        start_ind = self._layer_id(start) if start is not None else len(self._layers) - 1
        if end is not None:
            # BVLC 1.0 returns the diffs of the end layer's bottoms: what backward computed.
            end_ind = self._layer_id(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise CaffeError(f"top diff arguments {sorted(kwargs)} do not match net "
                                 f"outputs {self.outputs}")
            for name, value in kwargs.items():
                blob = self._blobs[self.blob_index[name]]
                if np.shape(value)[0] != blob.shape[0]:
                    raise CaffeError(f"diff '{name}' is not batch sized")
                blob.diff_numpy()[...] = value
        self._backward(start_ind, end_ind)
        return _results({out: self._blobs[self.blob_index[out]].diff_numpy() for out in outputs},
                        self)

    @exclusive("forward_all")
    def forward_all(self, blobs: Optional[Iterable[str]] = None,
                    **kwargs: Any) -> Dict[str, np.ndarray]:
        """Forward whole inputs batch by batch; return concatenated outputs."""
        all_outs: Dict[str, list] = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, value in outs.items():
                _collect(all_outs[out], value)
        return self._trim(all_outs, kwargs)

    @exclusive("forward_backward_all")
    def forward_backward_all(self, blobs: Optional[Iterable[str]] = None,
                             diffs: Optional[Iterable[str]] = None,
                             **kwargs: Any) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Forward and backward whole inputs batch by batch."""
        all_outs: Dict[str, list] = {out: [] for out in set(self.outputs + list(blobs or []))}
        all_diffs: Dict[str, list] = {d: [] for d in set(self.inputs + list(diffs or []))}
        forward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.inputs})
        backward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.outputs})
        for fb, bb in zip(forward_batches, backward_batches):
            for out, value in self.forward(blobs=blobs, **fb).items():
                _collect(all_outs[out], value)
            for d, value in self.backward(diffs=diffs, **bb).items():
                _collect(all_diffs[d], value)
        return self._trim(all_outs, kwargs), self._trim(all_diffs, kwargs)

    def _batch(self, blobs):
        num = len(next(iter(blobs.values()))) if blobs else 0
        batch_size = self._blobs[self.input_ids[0]].shape[0] if self.input_ids else 1
        remainder = num % batch_size
        for b in range(num // batch_size):
            i = b * batch_size
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                pad_shape = (batch_size - remainder,) + tuple(np.shape(blobs[name])[1:])
                padded[name] = np.concatenate([blobs[name][-remainder:], np.zeros(pad_shape)])
            yield padded
        if not blobs:
            yield {}

    def _trim(self, outs, kwargs):
        arrays = {k: np.asarray(v) for k, v in outs.items()}
        if kwargs:
            # Drop the padding of the last batch (scalar outputs have one value per batch).
            n = len(next(iter(kwargs.values())))
            arrays = {k: v[:n] if v.ndim > 1 or len(v) > n else v for k, v in arrays.items()}
        return arrays

    @exclusive("reshape")
    def reshape(self) -> None:
        self.reshape_all()

    def share_with(self, other: "PycaffeNet") -> None:
        self.share_trained_layers_with(other)

    def _set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        self.set_input_arrays(data, labels)

    @exclusive("set_input_arrays")
    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        layer = self._layers[0]
        if not hasattr(layer, "reset"):
            raise CaffeError("set_input_arrays needs a MemoryData layer as the first layer")
        layer.reset(np.ascontiguousarray(data, dtype=np.float32),
                    np.ascontiguousarray(labels, dtype=np.float32))

    def __repr__(self):
        rows = [f"  {n:<28} {l.type:<22} -> " +
                ", ".join(f"{self._blob_names[b]} {self._blobs[b].shape}" for b in ids)
                for n, l, ids in zip(self._layer_names, self._layers, self.top_ids)]
        return "\n".join([f"Net '{self.name}' ({len(self._layers)} layers)"] + rows)

    # Jupyter shows a net as its layer/blob/param table with the graph (caffe.vis.notebook).
    def _repr_html_(self):
        from .vis.notebook import net_html
        return net_html(self)

    def _repr_svg_(self):
        from .vis.notebook import net_svg
        return net_svg(self)
