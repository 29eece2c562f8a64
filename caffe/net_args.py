"""caffe.Net's arguments: the forms pycaffe takes, the phase by number or by name, and a weights
file given as the model or a prototxt given as the weights (arguments swapped), each refused
naming the argument before anything is built."""
import os

from . import formats
from .errors import NetError, ProtoError
from .proto import caffe_pb2

# BVLC's pycaffe takes caffe.TRAIN / caffe.TEST; their names are accepted too, in any case.
PHASE_NAMES = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST}
# Said after a file in the wrong argument, for Python and command-line users alike.
USAGE = ("the net definition (.prototxt) comes first, the weights (.caffemodel) second: "
         "caffe.Net(model, weights, phase), caffe test -model M -weights W")


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def file_kind(path):
    """What a file holds, judged from its first 4 KiB: "hdf5", "binary" or "text"; None for
    a path that is not a readable regular file, or is blank (its reader names the problem)."""
    try:
        if not os.path.isfile(path):
            return None
        with open(path, "rb") as f:
            head = f.read(4096)
    except (OSError, ValueError):
        return None
    if not head.strip():
        return None
    if head.startswith(HDF5_SIGNATURE):
        return "hdf5"
    return "text" if b"\0" not in head and formats.looks_textual(head) else "binary"


def holds_weights(param):
    """True when a NetParameter carries learned blobs: a trained .caffemodel's content."""
    return any(len(layer.blobs) for layer in param.layer) or \
        any(len(layer.blobs) for layer in param.layers)


def is_path(x):
    return isinstance(x, (str, bytes)) or hasattr(x, "__fspath__")


def is_phase_name(x):
    return isinstance(x, str) and x.lower() in PHASE_NAMES


def weights_and_phase(args, weights=None, phase=None):
    """(weights, phase) from the positional arguments after the model: (phase,), (weights,)
    or (weights, phase), over the keyword values; the phase as caffe.TRAIN or caffe.TEST."""
    if len(args) > 2:
        raise TypeError("Net(model, [weights,] phase): too many positional arguments")
    if len(args) == 2 or (args and is_path(args[0]) and not is_phase_name(args[0])):
        weights, args = args[0], args[1:]
    if args:
        phase = args[0]
    return weights, None if phase is None else phase_value(phase)


def phase_value(value):
    """A phase argument as caffe.TRAIN or caffe.TEST, or a NetError naming it."""
    if is_phase_name(value):
        return PHASE_NAMES[value.lower()]
    if not isinstance(value, bool) and value in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        return int(value)
    raise NetError(f"caffe.Net: phase {value!r} is neither caffe.TRAIN ({caffe_pb2.TRAIN}) nor "
                   f"caffe.TEST ({caffe_pb2.TEST}) (the names 'train' and 'test' work too)")


def read_model(path, weights=None):
    """The net definition in `path`, refusing a weights file in its place.

    Net(weights, model, phase), arguments swapped, would otherwise build the net from the
    copy of the training net that a .caffemodel holds and fail later at some layer.
    """
    kind, what = file_kind(path), None
    if kind == "hdf5":
        what = "an HDF5 file (weights?)"
    elif kind == "binary":
        try:
            param = formats.read_caffemodel(path)
        except ProtoError:
            param = None        # not a NetParameter: read_net_param below says what is wrong
        if param is not None and holds_weights(param):
            what = "a binary .caffemodel holding trained weights"
        elif param is not None:
            return param        # a binary net definition without weights
    if what is None:
        return formats.read_net_param(path)
    name = os.fsdecode(path)
    if weights is not None and file_kind(weights) == "text":
        raise ProtoError(f"model '{name}' is {what} and weights '{os.fsdecode(weights)}' a "
                         f"text file: the two are swapped; {USAGE}")
    raise ProtoError(f"model '{name}' is {what}, not a net definition; {USAGE}")


def check_weights(path):
    """Refuse a prototxt given as the weights before the net is built."""
    if file_kind(path) == "text":
        raise ProtoError(f"weights '{os.fsdecode(path)}' is a text file (a prototxt net "
                         f"definition?), not a .caffemodel of trained weights; {USAGE}")
