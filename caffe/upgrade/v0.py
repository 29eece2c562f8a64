"""V0 nets -> V1: one flat message per layer, and explicit "padding" layers folded into
their consumers."""
import logging

from ..errors import UpgradeError
from ..proto import caffe_pb2
from ..proto.compat import is_repeated

log = logging.getLogger("caffe")

V1 = caffe_pb2.V1LayerParameter


def net_needs_v0_to_v1_upgrade(net):
    return any(layer.HasField("layer") for layer in net.layers)


def upgrade_v0_net(v0_net, net):
    """Write the V1 form of ``v0_net`` into ``net``; returns False if settings were lost."""
    padded = upgrade_v0_padding_layers(v0_net)
    net.Clear()
    complete = True
    if padded.HasField("name"):
        net.name = padded.name
    for connection in padded.layers:
        complete &= upgrade_v0_layer_parameter(connection, net.layers.add())
    # Everything else a V0 net could hold is dropped, as Caffe does.
    net.input.extend(padded.input)
    net.input_dim.extend(padded.input_dim)
    if padded.HasField("force_backward"):
        net.force_backward = padded.force_backward
    return complete


def upgrade_v0_padding_layers(net):
    """Return a copy of V0 ``net`` with each "padding" layer folded into its consumer.

    V0 padded with a separate layer; its pad becomes the conv/pool layer's own
    ``pad`` and the consumer reads the padding layer's input directly.
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    # Index of the layer that last wrote each blob; -1 for net inputs.
    last_writer = {name: -1 for name in net.input}
    for i, connection in enumerate(net.layers):
        v0 = connection.layer
        if v0.type != "padding":
            out.layers.add().CopyFrom(connection)
        for j, blob in enumerate(connection.bottom):
            if blob not in last_writer:
                raise UpgradeError(f"unknown blob {blob!r} input to layer "
                                   f"{i} ({v0.name!r})")
            source_index = last_writer[blob]
            if source_index == -1:
                continue
            source = net.layers[source_index]
            if source.layer.type != "padding":
                continue
            # Caffe defined no other use of a padding layer.
            if v0.type not in ("conv", "pool"):
                raise UpgradeError(f"padding layer {source.layer.name!r} feeds "
                                   f"layer {v0.name!r} of type {v0.type!r}; "
                                   "only conv and pool layers take padding")
            if len(connection.bottom) != 1:
                raise UpgradeError(f"padded layer {v0.name!r} must have "
                                   "exactly one bottom")
            if len(source.bottom) != 1 or len(source.top) != 1:
                raise UpgradeError(f"padding layer {source.layer.name!r} must "
                                   "have exactly one bottom and one top")
            target = out.layers[-1]
            target.layer.pad = source.layer.pad
            target.bottom[j] = source.bottom[0]
        for blob in connection.top:
            last_writer[blob] = i
    return out


# V0 type string -> V1 enum name.
_V0_TYPES = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}


def upgrade_v0_layer_type(v0_type):
    """The V1 LayerType enum value for a V0 type string."""
    try:
        return V1.LayerType.Value(_V0_TYPES[v0_type])
    except KeyError:
        raise UpgradeError(f"unknown V0 layer type {v0_type!r}") from None


# Where each V0 setting goes, by V0 layer type: (sub-message, field).
# Settings found on any other layer type are reported and dropped.
_CONV = "convolution_param"
_IP = "inner_product_param"
_POOL = "pooling_param"
_LRN = "lrn_param"
_DATA = "data_param"
_HDF5 = "hdf5_data_param"
_IMAGES = "image_data_param"
_WINDOW = "window_data_param"
_V0_FIELDS = {
    "num_output": {"conv": (_CONV, "num_output"), "innerproduct": (_IP, "num_output")},
    "biasterm": {"conv": (_CONV, "bias_term"), "innerproduct": (_IP, "bias_term")},
    "weight_filler": {"conv": (_CONV, "weight_filler"),
                      "innerproduct": (_IP, "weight_filler")},
    "bias_filler": {"conv": (_CONV, "bias_filler"), "innerproduct": (_IP, "bias_filler")},
    "pad": {"conv": (_CONV, "pad"), "pool": (_POOL, "pad")},
    "kernelsize": {"conv": (_CONV, "kernel_size"), "pool": (_POOL, "kernel_size")},
    "group": {"conv": (_CONV, "group")},
    "stride": {"conv": (_CONV, "stride"), "pool": (_POOL, "stride")},
    "pool": {"pool": (_POOL, "pool")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio")},
    "local_size": {"lrn": (_LRN, "local_size")},
    "alpha": {"lrn": (_LRN, "alpha")},
    "beta": {"lrn": (_LRN, "beta")},
    "k": {"lrn": (_LRN, "k")},
    "source": {"data": (_DATA, "source"), "hdf5_data": (_HDF5, "source"),
               "images": (_IMAGES, "source"), "window_data": (_WINDOW, "source"),
               "infogain_loss": ("infogain_loss_param", "source")},
    "batchsize": {"data": (_DATA, "batch_size"), "hdf5_data": (_HDF5, "batch_size"),
                  "images": (_IMAGES, "batch_size"),
                  "window_data": (_WINDOW, "batch_size")},
    "rand_skip": {"data": (_DATA, "rand_skip"), "images": (_IMAGES, "rand_skip")},
    "shuffle_images": {"images": (_IMAGES, "shuffle")},
    "new_height": {"images": (_IMAGES, "new_height")},
    "new_width": {"images": (_IMAGES, "new_width")},
    "concat_dim": {"concat": ("concat_param", "concat_dim")},
    "det_fg_threshold": {"window_data": (_WINDOW, "fg_threshold")},
    "det_bg_threshold": {"window_data": (_WINDOW, "bg_threshold")},
    "det_fg_fraction": {"window_data": (_WINDOW, "fg_fraction")},
    "det_context_pad": {"window_data": (_WINDOW, "context_pad")},
    "det_crop_mode": {"window_data": (_WINDOW, "crop_mode")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", None)},
}
# Transformation settings move to transform_param whatever the layer type.
_V0_TRANSFORM = {"scale": "scale", "meanfile": "mean_file",
                 "cropsize": "crop_size", "mirror": "mirror"}


def _assign(message, field, value):
    """Set a scalar, append to a repeated field or copy a sub-message."""
    descriptor = message.DESCRIPTOR.fields_by_name[field]
    if is_repeated(descriptor):
        getattr(message, field).append(value)
    elif descriptor.message_type is not None:
        getattr(message, field).CopyFrom(value)
    else:
        setattr(message, field, value)


def upgrade_v0_layer_parameter(v0_connection, layer):
    """Write the V1 form of V0 layer entry ``v0_connection`` into V1 ``layer``."""
    layer.Clear()
    layer.bottom.extend(v0_connection.bottom)
    layer.top.extend(v0_connection.top)
    if not v0_connection.HasField("layer"):
        return True
    v0 = v0_connection.layer
    if v0.HasField("name"):
        layer.name = v0.name
    if v0.HasField("type"):
        layer.type = upgrade_v0_layer_type(v0.type)
    layer.blobs.extend(v0.blobs)
    layer.blobs_lr.extend(v0.blobs_lr)
    layer.weight_decay.extend(v0.weight_decay)

    complete = True
    for v0_field, targets in _V0_FIELDS.items():
        if not v0.HasField(v0_field):
            continue
        if v0.type not in targets:
            log.error("Unknown parameter %s for layer type %s", v0_field, v0.type)
            complete = False
            continue
        param_name, field = targets[v0.type]
        value = getattr(v0, v0_field)
        if field is None:  # the whole sub-message carries over
            getattr(layer, param_name).CopyFrom(value)
        else:
            if v0_field == "pool":  # same numbering, different enum types
                value = caffe_pb2.PoolingParameter.PoolMethod.Value(
                    caffe_pb2.V0LayerParameter.PoolMethod.Name(value))
            _assign(getattr(layer, param_name), field, value)
    for v0_field, field in _V0_TRANSFORM.items():
        if v0.HasField(v0_field):
            setattr(layer.transform_param, field, getattr(v0, v0_field))
    return complete
