"""V1 nets: their data layers' transformation fields -> transform_param, then V1 -> V2
(enum layer types and per-blob blobs_lr / weight_decay / param lists -> ParamSpecs)."""
import logging

from ..errors import UpgradeError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")

V1 = caffe_pb2.V1LayerParameter


_DATA_LAYERS = {
    V1.DATA: "data_param",
    V1.IMAGE_DATA: "image_data_param",
    V1.WINDOW_DATA: "window_data_param",
}
_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")


def net_needs_data_upgrade(net):
    for layer in net.layers:
        param_name = _DATA_LAYERS.get(layer.type)
        if param_name is not None:
            param = getattr(layer, param_name)
            if any(param.HasField(f) for f in _TRANSFORM_FIELDS):
                return True
    return False


def upgrade_net_data_transformation(net):
    for layer in net.layers:
        param_name = _DATA_LAYERS.get(layer.type)
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        # Caffe touches both messages for every data layer, so both end up
        # present (possibly empty); mirrored for identical output.
        param.SetInParent()
        layer.transform_param.SetInParent()
        for field in _TRANSFORM_FIELDS:
            if param.HasField(field):
                setattr(layer.transform_param, field, getattr(param, field))
                param.ClearField(field)


# ---------------------------------------------------------------------------
# V1 -> V2
# ---------------------------------------------------------------------------

def net_needs_v1_to_v2_upgrade(net):
    return len(net.layers) > 0


def upgrade_v1_net(v1_net, net):
    """Write the V2 form of ``v1_net`` into ``net`` (a different message).

    Returns False if something could not be carried over.
    """
    complete = True
    if len(v1_net.layer):
        log.error("Net to upgrade already has 'layer' entries; they are ignored "
                  "by the upgrade")
        complete = False
    net.CopyFrom(v1_net)
    del net.layers[:]
    del net.layer[:]
    for i, v1_layer in enumerate(v1_net.layers):
        if not upgrade_v1_layer_parameter(v1_layer, net.layer.add()):
            log.error("Upgrade of input layer %d failed", i)
            complete = False
    return complete


# Sub-messages with the same name and type in V1LayerParameter and
# LayerParameter.
_V1_PARAMS = (
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param",
    "eltwise_param", "exp_param", "hdf5_data_param", "hdf5_output_param",
    "hinge_loss_param", "image_data_param", "infogain_loss_param",
    "inner_product_param", "lrn_param", "memory_data_param", "mvn_param",
    "pooling_param", "power_param", "relu_param", "sigmoid_param",
    "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
)


def _param_spec(layer, i):
    """layer.param[i], adding empty ParamSpecs up to it."""
    while len(layer.param) <= i:
        layer.param.add()
    return layer.param[i]


def upgrade_v1_layer_parameter(v1_layer, layer):
    """Write the V2 form of V1 ``v1_layer`` into LayerParameter ``layer``."""
    layer.Clear()
    complete = True
    layer.bottom.extend(v1_layer.bottom)
    layer.top.extend(v1_layer.top)
    if v1_layer.HasField("name"):
        layer.name = v1_layer.name
    layer.include.extend(v1_layer.include)
    layer.exclude.extend(v1_layer.exclude)
    if v1_layer.HasField("type"):
        layer.type = upgrade_v1_layer_type(v1_layer.type)
    layer.blobs.extend(v1_layer.blobs)
    # The per-blob lists become one ParamSpec per blob.
    for i, name in enumerate(v1_layer.param):
        _param_spec(layer, i).name = name
    for i, mode in enumerate(v1_layer.blob_share_mode):
        _param_spec(layer, i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(
            V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1_layer.blobs_lr):
        _param_spec(layer, i).lr_mult = lr
    for i, decay in enumerate(v1_layer.weight_decay):
        _param_spec(layer, i).decay_mult = decay
    layer.loss_weight.extend(v1_layer.loss_weight)
    for name in _V1_PARAMS:
        if v1_layer.HasField(name):
            getattr(layer, name).CopyFrom(getattr(v1_layer, name))
    if v1_layer.HasField("layer"):
        log.error("Input net has a V0 layer inside a V1 layer; ignoring it")
        complete = False
    return complete


# V1 enum name -> V2 type string.
_V1_TYPES = {
    "NONE": "",
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}


def upgrade_v1_layer_type(v1_type):
    """The V2 type string for a V1 LayerType enum value."""
    try:
        return _V1_TYPES[V1.LayerType.Name(v1_type)]
    except (KeyError, ValueError):
        raise UpgradeError(f"unknown V1 layer type {v1_type!r}") from None
