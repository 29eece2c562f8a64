"""The net as a dataflow graph in single-assignment form, shared by both exporters.

A Caffe net names blobs, and in-place layers (ReLU after a convolution, BatchNorm + Scale
in ResNets) write the same blob again; ONNX graphs and the torch module's environment need
every value written once. Each write gets its own name: a blob's last write keeps the
blob's name (so outputs and intermediate blobs a user asks for read as in Caffe), earlier
writes are called `blob/layer`. Input blobs always keep their own name.
"""
from dataclasses import dataclass, field

from ..errors import CaffeError
from ..proto import caffe_pb2


class ExportError(CaffeError):
    """A net (or a layer in it) that the exporter cannot express."""


def layer_error(layer, message):
    return ExportError(f"cannot export layer '{layer.name}' (type {layer.type}): {message}")


# Layers that only make sense while training or that read data themselves.
DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData",
              "Python", "ImageSegData", "DenseImageData"}
TRAIN_ONLY_TYPES = {"Accuracy", "ContrastiveLoss", "EuclideanLoss", "HingeLoss",
                    "InfogainLoss", "MultinomialLogisticLoss", "SigmoidCrossEntropyLoss",
                    "SoftmaxWithLoss", "HDF5Output", "SegAccuracy"}


@dataclass
class Step:
    """One layer to convert: `bottoms` / `tops` are value names, `*_blobs` the net's blobs
    (for their shapes), `scope` a prefix that keeps node names of inner nets unique."""

    layer: object
    bottoms: list
    tops: list
    bottom_blobs: list
    top_blobs: list
    scope: str = ""

    @property
    def name(self):
        return self.scope + self.layer.name

    @property
    def type(self):
        return self.layer.type


@dataclass
class Plan:
    inputs: list = field(default_factory=list)      # (name, Blob)
    steps: list = field(default_factory=list)
    outputs: list = field(default_factory=list)     # (output name, value name, Blob)


class Namer:
    """Hands out value names, unique within one export. Blob names are reserved for the
    blobs themselves, so that no weight or intermediate value takes one first."""

    def __init__(self):
        self.used, self.reserved = set(), set()

    def reserve(self, names):
        self.reserved.update(names)

    def take(self, wanted, own=False):
        """`wanted`, or `wanted_2`, `wanted_3`...; `own`: a blob claiming its own name."""
        name, k = wanted, 1
        while name in self.used or (name in self.reserved and not own):
            k += 1
            name = f"{wanted}_{k}"
        self.used.add(name)
        return name


def plan_net(net, outputs=None, namer=None, scope="", feeds=None):
    """The steps that compute `outputs` (blob names; default the net's outputs).

    `feeds` maps some blob names to values that already exist (an inner net's inputs);
    the other Input layers' tops become the plan's inputs. Layers no output depends on
    are left out, so a TEST net's accuracy layers do not stop an export of its scores.
    """
    namer = namer or Namer()
    feeds = dict(feeds or {})
    names = net._blob_names
    wanted = list(net.outputs if outputs is None else outputs)
    for name in wanted:
        if name not in net.blob_index:
            raise ExportError(f"net '{net.name}' has no blob named '{name}' (blobs: "
                              f"{', '.join(names)})")
    # Backwards from the wanted blobs: which layers are needed.
    layers = range(len(net._layers))
    needed_blobs, needed = {net.blob_index[n] for n in wanted}, set()
    for i in reversed(layers):
        if any(b in needed_blobs for b in net.top_ids[i]):
            needed.add(i)
            needed_blobs.update(net.bottom_ids[i])
    namer.reserve(scope + n for n in names)
    last_writer = {}
    for i in layers:
        for b in net.top_ids[i]:
            last_writer[b] = i
    plan, current = Plan(), {}
    for i in layers:
        layer = net._layers[i]
        if layer.type == "Input":
            for b, blob in zip(net.top_ids[i], net.top_vecs[i]):
                if names[b] in feeds:
                    current[b] = feeds[names[b]]
                elif i in needed:
                    current[b] = namer.take(scope + names[b], own=True)
                    plan.inputs.append((current[b], blob))
            continue
        if i not in needed:
            continue
        check_exportable(layer)
        # Size the tops from the inputs' current shapes, as a forward would.
        layer.reshape(net.bottom_vecs[i], net.top_vecs[i])
        bottoms = [current[b] for b in net.bottom_ids[i]]
        tops = []
        for b in net.top_ids[i]:
            bare = scope + names[b]
            in_place = b in current
            last = last_writer[b] == i and not (in_place and _is_input(plan, current[b]))
            tops.append(namer.take(bare, own=True) if last else
                        namer.take(f"{bare}/{layer.name}"))
            current[b] = tops[-1]
        plan.steps.append(Step(layer, bottoms, tops, net.bottom_vecs[i], net.top_vecs[i],
                               scope))
    for name in wanted:
        b = net.blob_index[name]
        plan.outputs.append((scope + name, current[b], net._blobs[b]))
    return plan


def _is_input(plan, value):
    return any(value == name for name, _ in plan.inputs)


def check_exportable(layer):
    """Refuse layers that only mean something in training, and stochastic TRAIN behaviour."""
    if layer.type in DATA_TYPES:
        what = "a Python layer runs arbitrary code" if layer.type == "Python" else \
            "a data layer reads its own input"
        raise layer_error(layer, f"{what}; export a deploy net whose inputs are Input layers")
    if layer.type in TRAIN_ONLY_TYPES:
        raise layer_error(layer, "loss and accuracy layers are for training; export a deploy "
                                 "net, or name the blobs to export with outputs=[...]")
    if layer.type == "Filter":
        raise layer_error(layer, "its output size depends on the values of its selector "
                                 "input, which neither export can follow")
    if layer.phase == caffe_pb2.TRAIN and layer.type == "Dropout":
        raise layer_error(layer, "in the TRAIN phase dropout is random; build the net in "
                                 "the TEST phase (caffe.Net(model, weights, caffe.TEST))")
    if layer.type == "BatchNorm" and not layer.use_global_stats:
        raise layer_error(layer, "it normalizes by the statistics of each batch (TRAIN phase "
                                 "or use_global_stats: false); build the net in the TEST "
                                 "phase to use the stored statistics")
    stochastic = caffe_pb2.PoolingParameter.STOCHASTIC
    if layer.type == "Pooling" and layer.phase == caffe_pb2.TRAIN and \
            layer.param.pooling_param.pool == stochastic:
        raise layer_error(layer, "STOCHASTIC pooling samples at random in the TRAIN phase; "
                                 "build the net in the TEST phase")
    if layer.type == "Pooling" and layer.extra:
        raise layer_error(layer, "darknet2caffe's extra pooling window (dialect "
                                 "darknet2caffe) has no export form")
    if layer.type == "SPP" and layer.param.spp_param.pool == stochastic:
        raise layer_error(layer, "Caffe's SPP samples at random with STOCHASTIC pooling, in "
                                 "every phase")


def plan_recurrent(step, namer, zero_state):
    """The plan of an RNN/LSTM layer's unrolled inner net, to be emitted in the layer's place.

    The inner net's inputs are fed from the layer's bottoms; its recurrent state starts at
    zero, as in a freshly built net (`zero_state(name, blob)` gives the value that holds
    those zeros), or comes from the bottoms with expose_hidden. The plan's outputs line up
    with the layer's tops.
    """
    layer = step.layer
    feeds = {"x": step.bottoms[0], "cont": step.bottoms[1]}
    if layer.static_input:
        feeds["x_static"] = step.bottoms[2]
    hidden = step.bottoms[2 + layer.static_input:]
    for i, name in enumerate(layer.recurrent_input_names()):
        feeds[name] = hidden[i] if layer.expose_hidden else \
            zero_state(name, layer.recur_inputs[i])
    wanted = [layer.output_name] + (layer.recurrent_output_names() if layer.expose_hidden
                                    else [])
    return plan_net(layer.net, wanted, namer, scope=step.name + "/", feeds=feeds)
