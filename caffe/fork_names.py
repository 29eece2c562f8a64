"""Layer types and parameter names that only a Caffe fork defines, for the errors that meet them.

pycaffe implements many forks' layers (docs/forks/); a net from another fork still fails, but
its error names the fork a known name comes from and says how to supply the layer in Python.
Each entry was read in the fork's own sources (caffe.proto / REGISTER_LAYER_CLASS).
"""

_OCR = "senlinuc/caffe_ocr"
_YOLO = "eric612/MobileNet-YOLO"
_FLOWNET = "lmb-freiburg/flownet2"

FORK_TYPES = {
    "ReverseTime": _OCR, "WarpCTCLoss": _OCR,
    "SoftmaxWithLossMultiLabel": _OCR,
    "Yolov3": _YOLO, "GaussianYolov3": _YOLO,
    "RegionLoss": _YOLO, "YoloSeg": _YOLO, "SegmentationEvaluate": _YOLO,
    "AssistedExcitation": _YOLO, "LaneData": _YOLO,
    "Correlation": _FLOWNET, "Resample": _FLOWNET, "FlowWarp": _FLOWNET,
    "ChannelNorm": _FLOWNET, "DataAugmentation": _FLOWNET, "L1Loss": _FLOWNET,
    "CenterLoss": "ydwen/caffe-face",
    "MarginInnerProduct": "wy1iu/sphereface",
    "DomainTransform": "hszhao/PSPNet (DeepLab v2)",
    "AdaptiveBiasChannel": "hszhao/PSPNet (DeepLab v2)",
    "BiasChannel": "hszhao/PSPNet (DeepLab v2)",
    "UniqueLabel": "hszhao/PSPNet (DeepLab v2)",
    "MatRead": "hszhao/PSPNet (DeepLab v2)", "MatWrite": "hszhao/PSPNet (DeepLab v2)",
}

FORK_FIELDS = {
    "ctc_loss_param": _OCR,
    "reverse_time_param": _OCR,
    "region_loss_param": _YOLO, "yolov3_param": _YOLO, "yolo_seg_param": _YOLO,
    "segmentation_evaluate_param": _YOLO,
    "correlation_param": _FLOWNET, "resample_param": _FLOWNET,
    "augmentation_param": _FLOWNET, "l1_loss_param": _FLOWNET,
    "center_loss_param": "ydwen/caffe-face",
    "margin_inner_product_param": "wy1iu/sphereface",
}

PYTHON_LAYER_HINT = (
    "to run it, write the layer in Python: a caffe.Layer subclass with type = '{type}' "
    "registered with caffe.register_layer before the net is built, or a caffe.Layer-style "
    "class named in a 'Python' layer (python_param {{ module layer param_str }}); see "
    "docs/forks/community.md")


def type_hint(layer_type):
    """The sentence an unknown layer type's error ends with."""
    fork = FORK_TYPES.get(layer_type)
    where = f"'{layer_type}' is a layer of {fork}, which pycaffe does not implement; " \
        if fork else ""
    return where + PYTHON_LAYER_HINT.format(type=layer_type)


def field_hint(field):
    """The sentence an unknown field's error ends with, or '' for a name no fork is known for."""
    fork = FORK_FIELDS.get(field)
    if not fork:
        return ""
    return (f"'{field}' is a parameter of {fork}, whose layer pycaffe does not implement; "
            f"give that layer's settings to a Python layer instead (python_param "
            f"{{ param_str }}, docs/forks/community.md)")
