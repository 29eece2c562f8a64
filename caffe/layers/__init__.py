"""The built-in layer catalog, grouped by family as Caffe's headers once were.

Importing it registers every built-in type, in one place: here, where layers are created from
the registry (create_layer), so whoever can create a layer has the catalog; caffe.register_layer
comes from here too, so that a user's type meets the built-in ones when it registers.

As in BVLC's pycaffe, caffe.layers is also NetSpec's layer factory: caffe.layers.Convolution(...)
(any type name that is not a module's or a function's here) makes a NetSpec layer
(caffe.net_spec.layers takes any name).
"""
import difflib
import importlib.util

import torch

from . import (common_layers, reduction, affine, neuron, normalization, vision,  # noqa: F401
               pooling, loss, recurrent, data, python_layer, segmentation, crf, community,
               detection, detection_loss, detection_regions, yolo, ocr, dense_block)
from ..errors import CaffeError, LayerSetupError
from ..fork_names import type_hint
from ..layer import LAYER_REGISTRY, at_layer, register_layer  # noqa: F401 (for caffe's facade)


def layer_type_list():
    return sorted(LAYER_REGISTRY)


def create_layer(param, dtype=torch.float32, device="cpu"):
    """Instantiate the registered layer named by `param.type` (a LayerParameter)."""
    registry = LAYER_REGISTRY
    cls = registry.get(param.type)
    if cls is None:
        close = difflib.get_close_matches(param.type, registry, n=3, cutoff=0.5)
        close += [t for t in registry if t.lower() == param.type.lower() and t not in close]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise LayerSetupError(f"layer '{param.name}': unknown layer type '{param.type}'{hint} "
                              f"({type_hint(param.type)})")
    if param.dialect and param.dialect not in cls.dialects:
        raise LayerSetupError(f"layer '{param.name}' ({param.type}): dialect '{param.dialect}' "
                              f"is not one of this type's ({', '.join(cls.dialects) or 'none'})")
    try:
        return cls(param, dtype=dtype, device=device)
    except CaffeError as e:
        raise at_layer(e, param) from None


def __getattr__(name):
    # `from caffe.layers import bbox_util` asks here first: a module of the catalog is never a
    # NetSpec type, so say it is not loaded yet and the import system loads it.
    if name.startswith("__") or importlib.util.find_spec(f"{__name__}.{name}") is not None:
        raise AttributeError(f"module '{__name__}' has no attribute '{name}'")
    from ..net_spec import layers
    return getattr(layers, name)
