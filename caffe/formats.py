"""Caffe's files: prototxt, binary protobuf (.caffemodel, .solverstate, .binaryproto), HDF5.

Every reader turns a malformed file into a ProtoError naming the file (and line, for text);
every writer writes a temporary file beside the target and renames it, so a file under its
final name is always complete.
"""
import os
import tempfile

import h5py
import numpy as np
from google.protobuf import message, text_format

from .errors import ProtoError
from .proto import caffe_pb2

# A prototxt larger than this is almost certainly not a net definition; the user may raise it.
MAX_TEXT_BYTES = 256 * 2 ** 20


def _read_bytes(path, limit=None):
    try:
        size = os.path.getsize(path)
        if limit is not None and size > limit:
            raise ProtoError(f"{path}: {size} bytes, more than the limit {limit}")
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ProtoError(f"{path}: cannot read: {e.strerror or e}") from None


def parse_text(text, msg, source="<string>"):
    """Parse protobuf text into `msg`; errors name the source and line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtoError(f"{source}: not a text file (byte {e.start} is not UTF-8)") from None
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line = e.GetLine() if hasattr(e, "GetLine") else None
        where = f"{source} line {line}" if line else source
        detail = str(e)
        if line:
            # ParseError repeats "line:col :" in its message; keep only the reason.
            detail = detail.split(" : ", 1)[-1] if " : " in detail else detail
        raise ProtoError(f"{where}: {detail}") from None
    return msg


def parse_binary(data, msg, source="<bytes>"):
    try:
        msg.ParseFromString(data)
    except (message.DecodeError, RuntimeError, ValueError) as e:
        raise ProtoError(f"{source}: not a valid binary {msg.DESCRIPTOR.name} "
                         f"(truncated or not a protobuf file): {e}") from None
    return msg


def read_text_proto(path, msg):
    return parse_text(_read_bytes(path, MAX_TEXT_BYTES), msg, str(path))


def read_binary_proto(path, msg):
    return parse_binary(_read_bytes(path), msg, str(path))


def read_net_param(path):
    """A net definition from prototxt (or binary), upgraded to the current format."""
    from .upgrade import upgrade_net_as_needed
    path = str(path)
    data = _read_bytes(path, MAX_TEXT_BYTES)
    param = caffe_pb2.NetParameter()
    try:
        parse_text(data, param, path)
    except ProtoError as text_error:
        if b"\0" not in data[:4096] and _looks_textual(data):
            raise
        try:
            parse_binary(data, param, path)
        except ProtoError:
            raise text_error from None
    upgrade_net_as_needed(param, path)
    return param


def _looks_textual(data):
    sample = data[:4096]
    return all(b >= 9 for b in sample)


def read_solver_param(path):
    from .upgrade import upgrade_solver_as_needed
    param = read_text_proto(path, caffe_pb2.SolverParameter())
    upgrade_solver_as_needed(param, str(path))
    return param


def read_caffemodel(path):
    """A binary .caffemodel as a NetParameter, upgraded from V0/V1 if needed."""
    from .upgrade import upgrade_net_as_needed
    path = str(path)
    param = read_binary_proto(path, caffe_pb2.NetParameter())
    if not len(param.layer) and not len(param.layers):
        raise ProtoError(f"{path}: not a Caffe model: the file holds no layers")
    upgrade_net_as_needed(param, path)
    return param


def read_binaryproto(path):
    """A BlobProto file (mean images)."""
    blob = read_binary_proto(path, caffe_pb2.BlobProto())
    if not (len(blob.data) or len(blob.double_data)):
        raise ProtoError(f"{path}: not a Caffe blob: the file holds no values")
    return blob


# -- writing ---------------------------------------------------------------------
def atomic_write(path, data):
    """Write bytes (or call data(f) for a file object) to a temp file, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_binary_proto(path, msg):
    atomic_write(path, msg.SerializeToString())


def write_text_proto(path, msg):
    atomic_write(path, text_format.MessageToString(msg).encode())


def write_caffemodel(path, net_param):
    write_binary_proto(path, net_param)


# -- HDF5 (BVLC's layout: /data/<layer>/<i>, optional /diff/<layer>/<i>) ---------------
def write_hdf5_weights(path, groups):
    """groups: {"data": {layer: {i: ndarray}}, optionally "diff": ...}."""
    def write(f):
        with h5py.File(f, "w") as h5:
            for top, layers in groups.items():
                g = h5.create_group(top)
                for layer, blobs in layers.items():
                    lg = g.create_group(layer)
                    for i, value in blobs.items():
                        lg.create_dataset(str(i), data=np.asarray(value, dtype=np.float32))
    atomic_write(path, write)


def read_hdf5_weights(path, group="data"):
    """{layer: {i: ndarray}} from a .caffemodel.h5."""
    path = str(path)
    try:
        with h5py.File(path, "r") as h5:
            if group not in h5:
                raise ProtoError(f"{path}: HDF5 weights file has no '/{group}' group")
            out = {}
            for layer, lg in h5[group].items():
                if not isinstance(lg, h5py.Group):
                    raise ProtoError(f"{path}: /{group}/{layer} is not a group")
                out[layer] = {}
                for name, ds in lg.items():
                    if not name.isdigit() or not isinstance(ds, h5py.Dataset):
                        raise ProtoError(f"{path}: /{group}/{layer}/{name} is not a blob dataset")
                    out[layer][int(name)] = np.asarray(ds[()], dtype=np.float32)
            return out
    except OSError as e:
        raise ProtoError(f"{path}: not a readable HDF5 file: {e}") from None
