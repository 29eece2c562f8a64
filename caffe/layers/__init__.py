"""The built-in layer catalog, grouped by family as Caffe's headers once were.

Importing this package registers every built-in type (see caffe.layer_type_list()).
"""
from . import (common, affine, neuron, normalization, vision, pooling, loss,  # noqa: F401
               recurrent, data, python_layer)
