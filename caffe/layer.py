"""Layer: Caffe's unit of computation, and the registry of layer types.

Every layer follows Caffe's contract:
  setup(bottom, top)      read settings from self.param, check them, create learned blobs
  reshape(bottom, top)    size the tops (and buffers) from the bottoms
  forward(bottom, top)    compute top data from bottom data
  backward(top, propagate_down, bottom)
                          write bottom diffs where propagate_down says so, and
                          accumulate (+=) learned-blob diffs where self.param_propagate_down says so
`bottom` and `top` are lists of caffe.blob.Blob whose .data and .diff are torch tensors.

The registry maps Caffe type strings to layer classes; a type registered twice is an error
unless the second registration asks to replace the first. The built-in catalog, caffe.layers,
fills it when imported and is where layers are created from it (create_layer).
"""
from typing import NamedTuple, Optional, Tuple

import torch

from .blob import Blob
# copy_proto_into, proto_shape, proto_values, shape_matches_proto: re-exported for code that
# imports them from here; they live in blob_proto.py.
from .blob_proto import (blob_from_proto, blob_to_proto, copy_proto_into,  # noqa: F401
                         proto_shape, proto_values, shape_matches_proto)
from .errors import CaffeError, LayerSetupError
from .filler import fill
from .proto import caffe_pb2

# Caffe type string -> layer class: the built-in catalog (caffe.layers) registers its types
# when imported, and creates layers from them (caffe.layers.create_layer).
LAYER_REGISTRY: dict = {}


def register_layer(cls=None, *, replace=False):
    """Class decorator: make `cls` creatable by its Caffe type string.

    A type registered already is refused, as Caffe's LayerRegistry refuses it, unless the
    caller asks to replace it: @register_layer(replace=True). The same class defined again
    (a module reloaded, a notebook cell run twice) replaces its earlier self."""
    if cls is None:
        return lambda c: register_layer(c, replace=replace)
    if not cls.type:
        raise TypeError(f"{cls.__name__} has no Caffe type string")
    old = LAYER_REGISTRY.get(cls.type)
    same = old is not None and (old.__module__, old.__qualname__) == \
        (cls.__module__, cls.__qualname__)
    if old is not None and not (replace or same):
        raise LayerSetupError(f"layer type '{cls.type}' is already registered "
                              f"({old.__module__}.{old.__qualname__}); to replace it with "
                              f"{cls.__module__}.{cls.__qualname__}, register it with "
                              f"@register_layer(replace=True)")
    LAYER_REGISTRY[cls.type] = cls
    return cls


def at_layer(error, layer):
    """The CaffeError `error`, its message prefixed with the layer's name and type once.

    `layer` is a Layer or its LayerParameter."""
    prefix = f"layer '{layer.name}' ({layer.type})"
    if f"layer '{layer.name}'" in str(error):
        return error
    try:
        return type(error)(f"{prefix}: {error}")
    except TypeError:           # a subclass with another constructor
        return CaffeError(f"{prefix}: {error}")


class Step:
    """Layers the Net runs as one unit of its plan (caffe.net_plan): one layer, as Caffe runs
    it, or a fused pair. `layers` are their net indices, ascending; `units` the (layer, bottom,
    top, propagate_down, need_backward) of each, need_backward as the Net decided it. A fused
    step overrides forward and backward, and must leave every blob as its layers run one by
    one would."""

    __slots__ = ("layers", "units")

    def __init__(self, layers, units):
        self.layers, self.units = layers, units

    def reshape(self):
        for layer, bottom, top, _, _ in self.units:
            layer.reshape(bottom, top)

    def forward(self):
        for layer, bottom, top, _, _ in self.units:
            layer.forward(bottom, top)

    def backward(self):
        for layer, bottom, top, propagate_down, need_backward in reversed(self.units):
            if need_backward:
                layer.backward(top, propagate_down, bottom)


class Hints(NamedTuple):
    """A layer's hints to the Net's execution plan (Layer.plan_hints).

    fusion: a Step subclass that runs this layer and the next as one step, where its
        fits(layer, next_layer, bottom, top, next_bottom, next_top) says it may.
    own_input: this in-place layer's backward reads its input; when the Net also runs the
        layer producing it, that layer writes into a hidden blob this one reads (same shape,
        sharing the diff), so that no copy of the input is needed.
    diff_passthrough: (bottom, top) index pairs whose diffs backward makes equal, so that a
        Net recycling diffs may keep both in one buffer (the layer skips the copy then, by
        Blob.shares_diff_with).
    keeps_diffs: the layer's tops share their bottom's diff storage: recycling leaves them.
    """
    fusion: Optional[type] = None
    own_input: bool = False
    diff_passthrough: Tuple[Tuple[int, int], ...] = ()
    keeps_diffs: bool = False


NO_HINTS = Hints()


class Layer:
    """Base class of every layer; subclasses set `type` and override the contract."""

    type = ""
    # Caffe's blob-count contract; -1 means "no constraint".
    exact_num_bottom_blobs = -1
    min_bottom_blobs = -1
    max_bottom_blobs = -1
    exact_num_top_blobs = -1
    min_top_blobs = -1
    max_top_blobs = -1
    equal_num_bottom_top_blobs = False
    auto_top_blobs = False
    # The forks' variants of this type that LayerParameter.dialect may name (net_dialects.py).
    dialects: tuple = ()

    def __init__(self, param, dtype=torch.float32, device="cpu"):
        self.param = param
        self.phase = param.phase
        self.dtype = dtype
        self.device = torch.device(device)
        self.blobs = [blob_from_proto(b, dtype, device) for b in param.blobs]
        self.param_propagate_down = []
        self.loss_weights = []
        # The Net clears this where it will never call backward (no loss below the layer, as
        # in deploy nets), so forward need not keep what only backward reads (a copy of an
        # in-place input, pooling indices).
        self.need_backward = True

    @property
    def name(self):
        return self.param.name

    # -- the contract --------------------------------------------------------
    def setup(self, bottom, top):
        """One-time set-up: read and check parameters, create learned blobs."""

    def reshape(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__}.reshape")

    def forward(self, bottom, top):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, top, propagate_down, bottom):
        """Layers without a gradient leave the bottom diffs alone."""

    def allow_force_backward(self, bottom_index):
        return True

    def plan_hints(self, bottom, top):
        """What the Net's execution plan (caffe.net_plan) may do with this layer beyond
        Caffe's contract; the one place a layer says so. Hints() by default: nothing."""
        return NO_HINTS

    # -- driven by the Net ----------------------------------------------------
    def layer_setup(self, bottom, top):
        """Caffe's Layer::SetUp: check counts, set up, reshape, set loss weights.

        Every CaffeError it raises names the layer (its name and type)."""
        try:
            self.check_blob_counts(bottom, top)
            self.setup(bottom, top)
            if len(self.param_propagate_down) < len(self.blobs):
                self.param_propagate_down = [True] * len(self.blobs)
            self.reshape(bottom, top)
            self.set_loss_weights(top)
        except CaffeError as e:
            raise at_layer(e, self) from None

    def check_blob_counts(self, bottom, top):
        def check(what, n, exact, lo, hi):
            if exact >= 0 and n != exact:
                self.fail(f"takes exactly {exact} {what} blob(s), got {n}")
            if lo >= 0 and n < lo:
                self.fail(f"takes at least {lo} {what} blob(s), got {n}")
            if hi >= 0 and n > hi:
                self.fail(f"takes at most {hi} {what} blob(s), got {n}")
        check("bottom", len(bottom), self.exact_num_bottom_blobs, self.min_bottom_blobs,
              self.max_bottom_blobs)
        check("top", len(top), self.exact_num_top_blobs, self.min_top_blobs, self.max_top_blobs)
        if self.equal_num_bottom_top_blobs and len(bottom) != len(top):
            self.fail(f"needs as many tops as bottoms, got {len(bottom)} and {len(top)}")

    def set_loss_weights(self, top):
        """A non-zero loss_weight makes a top part of the objective; its diff holds the weight."""
        weights = list(self.param.loss_weight)
        if weights and len(weights) != len(top):
            self.fail(f"loss_weight must be given for every top or none "
                      f"({len(weights)} weights, {len(top)} tops)")
        self.loss_weights = weights + [0.0] * (len(top) - len(weights))
        for blob, w in zip(top, self.loss_weights):
            if w:
                blob.diff.fill_(w)

    def loss(self, top_index):
        return self.loss_weights[top_index] if top_index < len(self.loss_weights) else 0.0

    # -- helpers for subclasses -----------------------------------------------
    def new_blob(self, shape, filler=None):
        """A learned blob in the layer's dtype and device, filled by a FillerParameter."""
        blob = Blob(shape, self.dtype, self.device)
        # A new blob is zero already: skip the (costly, for big nets) constant-0 fill.
        if filler is not None and not (filler.type == "constant" and filler.value == 0):
            fill(blob.data, filler)
        return blob

    def fail(self, message):
        raise LayerSetupError(f"layer '{self.name}' ({self.type}): {message}")

    def to_proto(self, write_diff=False, out=None):
        """The layer's LayerParameter with its learned blobs (Caffe's Layer::ToProto)."""
        out = caffe_pb2.LayerParameter() if out is None else out
        out.CopyFrom(self.param)
        del out.blobs[:]
        for blob in self.blobs:
            blob_to_proto(blob, out.blobs.add(), write_diff)
        return out

    def __repr__(self):
        return f"<{type(self).__name__} '{self.name}'>"


class NeuronLayer(Layer):
    """One bottom, one top of the same shape; may run in place."""

    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])
