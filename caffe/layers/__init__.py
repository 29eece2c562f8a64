"""The built-in layer catalog, grouped by family as Caffe's headers once were.

Importing this package registers every built-in type (see caffe.layer_type_list()).
"""
from . import (common, reduction, affine, neuron, normalization, vision, pooling,  # noqa: F401
               loss, recurrent, data, python_layer, segmentation, crf, community,
               detection, detection_loss, detection_regions, annotated_data, yolo, ocr,
               dense_block)
