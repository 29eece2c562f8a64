"""Rewrite old-format Caffe definitions into the current one, as Caffe does on load.

Caffe's files went through several formats, and Caffe upgrades each of them in
memory when it reads a net or solver; pycaffe does the same, with the same
results, so that old model zoo files keep loading:

* V0 nets: ``layers { layer { type: "conv" ... } }`` with every setting in one
  flat message and explicit "padding" layers in front of conv/pool layers.
* data layers that carry scale / mean_file / crop_size / mirror themselves
  instead of in ``transform_param``.
* V1 nets: ``layers { type: CONVOLUTION ... }`` with enum types and per-blob
  ``blobs_lr`` / ``weight_decay`` / ``param`` lists.
* net-level ``input`` / ``input_shape`` / ``input_dim`` fields instead of an
  Input layer.
* BatchNorm layers that still declare their three statistics as ParamSpecs.
* solvers with the ``solver_type`` enum instead of the ``type`` string.

The functions change the message they are given in place and return whether
the upgrade was complete.  A setting that has no place in the new format is
logged and dropped (the upgrade carries on, as Caffe's does); a definition that
cannot be upgraded at all raises :class:`caffe.errors.UpgradeError`.
"""

import logging

from caffe.errors import UpgradeError
from caffe.proto import caffe_pb2
from caffe.proto.compat import is_repeated

log = logging.getLogger("caffe")

V1 = caffe_pb2.V1LayerParameter

__all__ = [
    "net_needs_upgrade", "upgrade_net_as_needed",
    "net_needs_v0_to_v1_upgrade", "upgrade_v0_net", "upgrade_v0_padding_layers",
    "upgrade_v0_layer_parameter", "upgrade_v0_layer_type",
    "net_needs_data_upgrade", "upgrade_net_data_transformation",
    "net_needs_v1_to_v2_upgrade", "upgrade_v1_net", "upgrade_v1_layer_parameter",
    "upgrade_v1_layer_type",
    "net_needs_input_upgrade", "upgrade_net_input",
    "net_needs_batch_norm_upgrade", "upgrade_net_batch_norm",
    "solver_needs_upgrade", "upgrade_solver_as_needed",
    "solver_needs_type_upgrade", "upgrade_solver_type",
]


# ---------------------------------------------------------------------------
# Whole nets
# ---------------------------------------------------------------------------

def net_needs_upgrade(net):
    """True if ``net`` uses any deprecated form that upgrade_net_as_needed rewrites."""
    return (net_needs_v0_to_v1_upgrade(net) or net_needs_v1_to_v2_upgrade(net)
            or net_needs_data_upgrade(net) or net_needs_input_upgrade(net)
            or net_needs_batch_norm_upgrade(net))


def upgrade_net_as_needed(net, source_name="<net>"):
    """Bring ``net`` (a NetParameter) to the current format in place.

    ``source_name`` only names the net in log messages.  Returns False when some
    setting could not be carried over (each one is logged); raises UpgradeError
    when the net cannot be upgraded at all.
    """
    success = True
    if net_needs_v0_to_v1_upgrade(net):
        log.info("Attempting to upgrade V0 layer definitions in %s", source_name)
        original = caffe_pb2.NetParameter()
        original.CopyFrom(net)
        if upgrade_v0_net(original, net):
            log.info("Upgraded V0 layer definitions in %s", source_name)
        else:
            success = False
            log.error("Problems upgrading the V0 layers of %s (see above); "
                      "continuing anyway", source_name)
        log.warning("V0 net definitions are deprecated; save %s in the "
                    "current format (caffe.upgrade)", source_name)
    if net_needs_data_upgrade(net):
        log.info("Attempting to move data transformation settings of %s "
                 "into transform_param", source_name)
        upgrade_net_data_transformation(net)
        log.info("Moved data transformation settings of %s", source_name)
        log.warning("Transformation settings belong in transform_param; "
                    "the data layer fields are deprecated")
    if net_needs_v1_to_v2_upgrade(net):
        log.info("Attempting to upgrade V1 layer definitions in %s", source_name)
        original = caffe_pb2.NetParameter()
        original.CopyFrom(net)
        if upgrade_v1_net(original, net):
            log.info("Upgraded V1 layer definitions in %s", source_name)
        else:
            success = False
            log.error("Problems upgrading the V1 layers of %s (see above); "
                      "continuing anyway", source_name)
    if net_needs_input_upgrade(net):
        log.info("Attempting to turn the input fields of %s into an Input "
                 "layer", source_name)
        upgrade_net_input(net)
        log.info("Turned the input fields of %s into an Input layer", source_name)
        log.warning("Net-level input fields are deprecated; use an Input layer")
    if net_needs_batch_norm_upgrade(net):
        log.info("Attempting to upgrade BatchNorm layers of %s that declare "
                 "their statistics as params", source_name)
        upgrade_net_batch_norm(net)
        log.info("Upgraded the BatchNorm layers of %s", source_name)
    return success


# ---------------------------------------------------------------------------
# V0 -> V1
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Data transformation fields -> transform_param (V1 layers)
# ---------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------
# Net-level input fields -> Input layer
# ---------------------------------------------------------------------------

def net_needs_input_upgrade(net):
    return len(net.input) > 0


def upgrade_net_input(net):
    """Replace ``input`` / ``input_shape`` / ``input_dim`` with a leading Input layer.

    Inputs without any shape (old .caffemodel files list them that way) are
    simply dropped: the weights file never needed them.
    """
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise UpgradeError(f"{n} net inputs but only {len(net.input_shape)} "
                               "input_shape entries")
        if not has_shape and len(net.input_dim) < 4 * n:
            raise UpgradeError(f"{n} net inputs need {4 * n} input_dim values, "
                               f"got {len(net.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        # First, so that every consumer comes after it.
        net.layer.insert(0, layer)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


# ---------------------------------------------------------------------------
# BatchNorm statistics declared as params
# ---------------------------------------------------------------------------

def _is_legacy_batch_norm(layer):
    # Old BatchNorm definitions had to list three ParamSpecs (mean, variance,
    # scale factor) to keep the solver off the statistics.
    return layer.type == "BatchNorm" and len(layer.param) == 3


def net_needs_batch_norm_upgrade(net):
    return any(_is_legacy_batch_norm(layer) for layer in net.layer)


def upgrade_net_batch_norm(net):
    """Freeze the three statistics ParamSpecs of legacy BatchNorm layers.

    Caffe 1.0 keeps the specs (so their names still share statistics between
    layers) and only forces lr_mult and decay_mult to 0, which the BatchNorm
    layer requires.
    """
    for layer in net.layer:
        if _is_legacy_batch_norm(layer):
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0


# ---------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------

_SOLVER_TYPES = {
    "SGD": "SGD",
    "NESTEROV": "Nesterov",
    "ADAGRAD": "AdaGrad",
    "RMSPROP": "RMSProp",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
}


def solver_needs_type_upgrade(solver):
    return solver.HasField("solver_type")


def solver_needs_upgrade(solver):
    return solver_needs_type_upgrade(solver)


def upgrade_solver_type(solver):
    """Replace the ``solver_type`` enum with the ``type`` string."""
    if solver.HasField("solver_type") and solver.HasField("type"):
        raise UpgradeError("solver sets both the old solver_type (enum) and the "
                           "new type (string); keep only type")
    if not solver.HasField("solver_type"):
        log.error("Solver type is already up to date")
        return False
    enum_name = caffe_pb2.SolverParameter.SolverType.Name(solver.solver_type)
    solver.type = _SOLVER_TYPES[enum_name]
    solver.ClearField("solver_type")
    return True


def upgrade_solver_as_needed(solver, source_name="<solver>"):
    """Bring ``solver`` (a SolverParameter) to the current format in place."""
    success = True
    if solver_needs_type_upgrade(solver):
        log.info("Attempting to upgrade the solver_type enum of %s", source_name)
        if upgrade_solver_type(solver):
            log.info("Upgraded solver_type of %s to the type string", source_name)
            log.warning("solver_type is deprecated; use type (a string) instead")
        else:
            success = False
            log.error("Problems upgrading the solver type of %s (see above)",
                      source_name)
    return success
