"""The built-in layer catalog, grouped by family as Caffe's headers once were."""
import importlib

_FAMILIES = ("common", "affine", "neuron", "normalization", "vision", "pooling", "loss",
             "recurrent", "data", "python_layer")

for _family in _FAMILIES:
    try:
        importlib.import_module(f"{__name__}.{_family}")
    except ModuleNotFoundError as e:
        # A family not written yet must not break the others; a missing dependency must.
        if e.name != f"{__name__}.{_family}":
            raise
