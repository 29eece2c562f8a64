"""Tools to test layers and nets, built-in or your own: a numerical gradient checker, the
inference program's agreement check, and helpers."""
from .gradient_check import check_gradient, layer_param, make_layer, random_blob
from .inference_check import check_inference, relative_difference

__all__ = ["check_gradient", "check_inference", "layer_param", "make_layer", "random_blob",
           "relative_difference"]
