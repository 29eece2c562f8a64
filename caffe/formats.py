"""Caffe's files: prototxt, binary protobuf (.caffemodel, .solverstate, .binaryproto), HDF5.

Every reader turns a malformed file into a ProtoError naming the file (and line, for text);
every writer writes a temporary file beside the target and renames it, so a file under its
final name is always complete.
"""
import os
import stat
import tempfile

import numpy as np
from google.protobuf import message, text_format

from . import blob as _blob, files, hdf5
from ._optional import LazyModule
from .errors import CaffeError, ProtoError, UpgradeError, WriteError
from .proto import caffe_pb2, dialects, fast_text
from .proto.text_strings import check_text_strings
from .proto.compat import is_repeated

h5py = LazyModule("h5py")

# Size limits on what a file may make us read; the user may raise them (caffe.formats.X = ...).
# A text file (prototxt, solver, image list, window file) larger than this is almost certainly
# not what it claims to be.
MAX_TEXT_BYTES = 256 * 2 ** 20
# Protobuf cannot parse a binary message of 2 GiB or more anyway.
MAX_BINARY_BYTES = 2 ** 31 - 1

# What h5py raises on a malformed file besides OSError (found by fuzzing: a bad superblock,
# dangling links, corrupt type or shape messages).
H5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError, OverflowError)


def _read_bytes(path, limit=None, error=ProtoError, what=None):
    """The bytes of a regular file of at most `limit` bytes (MAX_BINARY_BYTES if None)."""
    limit = MAX_BINARY_BYTES if limit is None else limit
    name = "MAX_TEXT_BYTES" if limit == MAX_TEXT_BYTES else \
        "MAX_BINARY_BYTES" if limit == MAX_BINARY_BYTES else None
    where = f"{what} '{path}'" if what else f"{path}"
    try:
        info = os.stat(path)
        # A FIFO would block and a device (/dev/zero) never end: only plain files are read.
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{where}: not a regular file")
        with open(path, "rb") as f:
            # Read one byte past the limit: a file growing after stat() is caught too. The
            # first read asks for the size stat() gave, not the limit: Python allocates what
            # read() is asked for, and 2 GiB would fail under an address-space limit.
            parts = [f.read(min(limit, info.st_size) + 1)]
            total = len(parts[0])
            while total <= limit and len(parts[-1]):
                parts.append(f.read(min(limit + 1 - total, 2 ** 26)))
                total += len(parts[-1])
            data = parts[0] if len(parts) == 1 else b"".join(parts)
    except ValueError:      # a NUL inside the path
        raise error(f"{where!r}: not a valid file name") from None
    except OSError as e:
        reason = e.strerror or e
        message = f"cannot read {where}: {reason}" if what else f"{path}: cannot read: {reason}"
        raise error(message) from None
    if len(data) > limit:
        size = max(info.st_size, len(data))
        variable = f" (caffe.formats.{name})" if name else ""
        raise error(f"{where}: {size} bytes, more than the limit {limit}{variable}")
    return data


def read_text_file(path, what="text file", error=ProtoError):
    """A UTF-8 text file (image list, window file, ...) as str, within MAX_TEXT_BYTES."""
    data = _read_bytes(path, MAX_TEXT_BYTES, error, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(f"{what} '{path}' line {line}: not UTF-8 text (byte {e.start})") from None


def _upgrade(upgrade, param, path):
    try:
        upgrade(param, path)
    except UpgradeError as e:
        raise UpgradeError(f"{path}: {e}") from None


def upgrade_net_if_needed(param, source):
    """Bring a NetParameter to the current format in place (as files are on reading)."""
    from .upgrade import net_needs_upgrade, upgrade_net_as_needed
    if net_needs_upgrade(param):
        _upgrade(upgrade_net_as_needed, param, source)


def parse_text(text, msg, source="<string>"):
    """Parse protobuf text into `msg`; errors name the source and line."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtoError(f"{source}: not a text file (byte {e.start} is not UTF-8)") from None
    # One check for both parsers: protoc (large files) accepts escapes such as "\377" that
    # make a name invalid UTF-8, which text_format refuses and nothing could reload.
    check_text_strings(text, msg, source, ProtoError)
    try:
        # Large files go to protobuf's C++ parser when protoc is installed (100x faster).
        if fast_text.parse_large(text, msg, source):
            bad = _non_utf8_string(msg)
            if bad:
                raise ProtoError(f"{source}: field {bad} is not UTF-8 text")
            return msg
    except fast_text.TextParseError as e:
        where = f"{source} line {e.line}" if e.line else source
        raise ProtoError(f"{where}: {e.reason}") from None
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
    bad = _non_utf8_string(msg)
    if bad:
        raise ProtoError(f"{source}: field {bad} of the binary {msg.DESCRIPTOR.name} is not "
                         f"UTF-8 text")
    return msg


def _non_utf8_string(msg, prefix=""):
    """The path of a string field holding invalid UTF-8, or None.

    caffe.proto is proto2, whose parser does not check strings: a bad one comes back as bytes
    and would break whatever uses it as a name (found by fuzzing .caffemodel files).
    """
    for field, value in msg.ListFields():
        repeated = is_repeated(field)
        if field.type == field.TYPE_STRING:
            for i, v in enumerate(value if repeated else (value,)):
                if isinstance(v, bytes):
                    return f"{prefix}{field.name}" + (f"[{i}]" if repeated else "")
        elif field.type in (field.TYPE_MESSAGE, field.TYPE_GROUP):
            for i, v in enumerate(value if repeated else (value,)):
                bad = _non_utf8_string(v, f"{prefix}{field.name}" +
                                       (f"[{i}]." if repeated else "."))
                if bad:
                    return bad
    return None


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
            parse_binary(dialects.to_canonical(data), param, path)
        except ProtoError:
            raise text_error from None
    _upgrade(upgrade_net_as_needed, param, path)
    return param


def _looks_textual(data):
    sample = data[:4096]
    return all(b >= 9 for b in sample)


def read_solver_param(path):
    from .upgrade import upgrade_solver_as_needed
    param = read_text_proto(path, caffe_pb2.SolverParameter())
    _upgrade(upgrade_solver_as_needed, param, str(path))
    return param


def read_caffemodel(path):
    """A binary .caffemodel as a NetParameter, upgraded from V0/V1 if needed."""
    from .upgrade import upgrade_net_as_needed
    path = str(path)
    param = parse_binary(dialects.to_canonical(_read_bytes(path)), caffe_pb2.NetParameter(),
                         path)
    if not len(param.layer) and not len(param.layers):
        raise ProtoError(f"{path}: not a Caffe model: the file holds no layers")
    _upgrade(upgrade_net_as_needed, param, path)
    return param


def read_binaryproto(path):
    """A BlobProto file (mean images)."""
    blob = read_binary_proto(path, caffe_pb2.BlobProto())
    if not (len(blob.data) or len(blob.double_data)):
        raise ProtoError(f"{path}: not a Caffe blob: the file holds no values")
    check_blob_proto(blob, str(path))
    return blob


def check_blob_proto(blob, source="BlobProto"):
    """Refuse a BlobProto whose declared shape is negative, over the limit, or not its data's."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    shape = (blob.num, blob.channels, blob.height, blob.width) if legacy else \
        tuple(blob.shape.dim)
    count = _blob.checked_count(shape, f"{source}: blob", ProtoError)
    values = len(blob.double_data) or len(blob.data)
    if values != count:
        raise ProtoError(f"{source}: blob shape {shape} declares {count} values but the file "
                         f"holds {values}")
    return shape


# -- writing ---------------------------------------------------------------------
def atomic_write(path, data):
    """Write bytes (or call data(f) for a file object) to a temp file, then rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                                   dir=folder)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); the result gets the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not isinstance(e, CaffeError):
            raise _write_error(path, e) from None
        raise
    _fsync_folder(folder)


def _write_error(path, error):
    """An OSError while writing `path` (disk full, read-only folder) as a WriteError naming it."""
    out = WriteError(f"cannot write '{path}': {error.strerror or error}")
    out.errno = error.errno         # (no filename: OSError would then rewrite the message)
    return out


def _fsync_folder(folder):
    """Make the rename itself durable (a power cut must not bring the old file back)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return                      # not possible on this platform (Windows): best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# The process umask, read once at import (os.umask can only be read by setting it).
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def write_binary_proto(path, msg):
    atomic_write(path, msg.SerializeToString())


def write_text_proto(path, msg):
    atomic_write(path, text_format.MessageToString(msg).encode())


def write_caffemodel(path, net_param):
    """A binary NetParameter, fork layers' parameters at their forks' numbers (dialects.py)."""
    atomic_write(path, dialects.to_disk(net_param))


# -- HDF5 (BVLC's layout: /data/<layer>/<i>, optional /diff/<layer>/<i>) ---------------
def write_hdf5_weights(path, groups):
    """groups: {"data": {layer: {i: ndarray}}, optionally "diff": ...}. Layer names that HDF5
    cannot hold as group names round-trip through hdf5_group_names."""
    def write(f):
        with h5py.File(f, "w") as h5:
            for top, layers in groups.items():
                g = h5.create_group(top)
                names = hdf5.group_names(list(layers))
                for layer, blobs in layers.items():
                    lg = g.create_group(names[layer])
                    if names[layer] != layer:
                        hdf5.write_layer_name(lg, layer)
                    for i, value in blobs.items():
                        # float64 nets keep doubles, as BVLC's Net<double> does.
                        value = np.asarray(value)
                        dtype = np.float64 if value.dtype == np.float64 else np.float32
                        lg.create_dataset(str(i), data=value.astype(dtype, copy=False))
    atomic_write(path, write)


def read_hdf5_weights(path, group="data"):
    """{layer: {i: ndarray}} from a .caffemodel.h5, every dataset checked before any is read."""
    path = str(path)
    try:
        with hdf5.open_file(path, ProtoError) as h5:
            top = hdf5.member(h5, group, path, ProtoError)
            if top is None:
                raise ProtoError(f"{path}: HDF5 weights file has no '/{group}' group")
            if not isinstance(top, h5py.Group):
                raise ProtoError(f"{path}: /{group} is not a group")
            found, out = [], {}
            for group_name, lg in hdf5.items(top, path, ProtoError):
                if not isinstance(lg, h5py.Group):
                    raise ProtoError(f"{path}: /{group}/{group_name} is not a group")
                layer = hdf5.layer_name(lg, group_name, path, ProtoError)
                if layer in out:
                    raise ProtoError(f"{path}: two groups of /{group} hold layer '{layer}'")
                out[layer] = {}
                for name, ds in hdf5.items(lg, path, ProtoError):
                    if not name.isdigit() or not isinstance(ds, h5py.Dataset):
                        raise ProtoError(f"{path}: /{group}/{group_name}/{name} is not a blob "
                                         f"dataset")
                    dtype = np.float64 if ds.dtype == np.float64 else np.float32
                    found.append((layer, int(name), ds, dtype))
            arrays = hdf5.read_all([(ds, dtype) for _, _, ds, dtype in found], path, ProtoError)
            for (layer, i, _, _), value in zip(found, arrays):
                out[layer][i] = value
            return out
    except CaffeError:
        raise
    except H5_ERRORS as e:
        raise ProtoError(f"{path}: not a readable HDF5 file: {e}") from None


def check_regular_file(path, error=ProtoError):
    """Fail early, with our message, on a path that is not a regular file."""
    files.check_regular_file(path, error)


def read_hdf5_array(ds, path, dtype, error=ProtoError):
    """A numeric HDF5 dataset as an ndarray of `dtype`, inspected (size, storage, filters)
    before it is read (caffe.hdf5)."""
    return hdf5.read_all([(ds, dtype)], path, error)[0]
