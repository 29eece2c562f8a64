"""Blob <-> BlobProto, as Caffe's Blob::FromProto / ToProto (weights, means, solver states)."""
import numpy as np
import torch
from google.protobuf.internal.encoder import _VarintBytes

from .blob import Blob, note_weight_write
from .errors import LayerSetupError


def proto_shape(proto):
    """The shape a BlobProto declares, from `shape` or the legacy 4-D fields."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") \
            or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim)


def shape_matches_proto(blob, proto):
    """Caffe's Blob::ShapeEquals: legacy dims compare against the legacy 4-D view."""
    if proto.HasField("num") or proto.HasField("channels") or proto.HasField("height") \
            or proto.HasField("width"):
        return blob.num_axes <= 4 and (blob.legacy_shape(-4), blob.legacy_shape(-3),
                                       blob.legacy_shape(-2), blob.legacy_shape(-1)) == \
            (proto.num, proto.channels, proto.height, proto.width)
    return tuple(proto.shape.dim) == blob.shape


def proto_values(proto, count, what="data"):
    """The values of a BlobProto as a float64 or float32 tensor of `count` elements."""
    doubles = getattr(proto, "double_" + what)
    values = doubles if len(doubles) else getattr(proto, what)
    if len(values) != count:
        raise LayerSetupError(f"blob declares {count} elements but holds {len(values)} {what} "
                              f"values")
    # upb's repeated fields expose a buffer, so this is a copy, not a Python loop.
    return torch.from_numpy(np.array(values, dtype=np.float64 if len(doubles) else np.float32))


def blob_from_proto(proto, dtype=torch.float32, device="cpu"):
    blob = Blob(proto_shape(proto), dtype, device)
    copy_proto_into(proto, blob)
    return blob


def copy_proto_into(proto, blob):
    """Blob::FromProto with reshape=false; the caller has checked the shape."""
    count = blob.count()
    blob.data.copy_(proto_values(proto, count).view(blob.shape))
    note_weight_write()
    if len(proto.diff) or len(proto.double_diff):
        blob.diff.copy_(proto_values(proto, count, "diff").view(blob.shape))


def _packed(field_number, array):
    # Appending a packed repeated field through its wire form lets upb copy the bytes
    # in one go; extending the field from Python would visit every element.
    payload = array.tobytes()
    return _VarintBytes(field_number << 3 | 2) + _VarintBytes(len(payload)) + payload


def blob_to_proto(blob, proto, write_diff=False):
    """Blob::ToProto: shape plus float (or double, for float64 blobs) values."""
    proto.Clear()
    proto.shape.dim.extend(blob.shape)
    double = blob.dtype == torch.float64
    dtype = "<f8" if double else "<f4"
    data_field, diff_field = ("double_data", "double_diff") if double else ("data", "diff")
    fields = [(data_field, blob.data)] + ([(diff_field, blob.diff)] if write_diff else [])
    for name, tensor in fields:
        number = proto.DESCRIPTOR.fields_by_name[name].number
        values = tensor.detach().cpu().to(torch.float64 if double else torch.float32)
        proto.MergeFromString(_packed(number, values.numpy().astype(dtype).ravel()))
    return proto
