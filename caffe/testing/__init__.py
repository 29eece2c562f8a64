"""Tools to test layers, built-in or your own: a numerical gradient checker and helpers."""
from .gradient_check import check_gradient, layer_param, make_layer, random_blob

__all__ = ["check_gradient", "layer_param", "make_layer", "random_blob"]
