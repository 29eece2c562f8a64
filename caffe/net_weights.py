"""A Net's learned blobs: copied in from .caffemodel[.h5] files, shared, saved.

Caffe's Net::CopyTrainedLayersFrom*, ShareTrainedLayersWith, ToProto and ToHDF5.
"""
import logging

import torch

from . import formats
from .blob import HALF_DTYPES
from .errors import CaffeError, WeightsError
from .log_text import printable
from .net_guard import exclusive
from .blob_proto import blob_to_proto, copy_proto_into, proto_shape, shape_matches_proto
from .proto import caffe_pb2

log = logging.getLogger("caffe")


class NetWeights:
    """Net's weight methods; the Net holds _layers, layer_index and the param tables."""

    def _share_weights(self):
        """Params named alike share one blob (data and diff) with their owner."""
        for pid, owner in enumerate(self.param_owners):
            if owner >= 0:
                self._params[pid].share_data(self._params[owner])
                self._params[pid].share_diff(self._params[owner])

    def copy_trained_layers_from(self, net_param, source="weights"):
        """Copy learned blobs by layer name; unknown source layers are skipped (Caffe)."""
        for src in net_param.layer:
            i = self.layer_index.get(src.name)
            if i is None:
                log.info("Ignoring source layer %s", printable(src.name))
                continue
            target = self._layers[i].blobs
            if len(target) != len(src.blobs):
                raise WeightsError(f"{source}: layer '{src.name}': incompatible number of "
                                   f"blobs, source has {len(src.blobs)}, target {len(target)}")
            for j, (blob, proto) in enumerate(zip(target, src.blobs)):
                if not shape_matches_proto(blob, proto):
                    raise WeightsError(
                        f"{source}: layer '{src.name}': cannot copy param {j}, shape "
                        f"{proto_shape(proto)} vs {blob.shape} in the net. To learn this "
                        f"layer's parameters from scratch rather than copying them, rename "
                        f"the layer.")
                try:
                    copy_proto_into(proto, blob)
                except CaffeError as e:
                    raise WeightsError(f"{source}: layer '{src.name}': param {j}: {e}") from None

    def copy_trained_layers_from_hdf5(self, groups, source="weights"):
        for name, datasets in groups.items():
            i = self.layer_index.get(name)
            if i is None:
                log.info("Ignoring source layer %s", printable(name))
                continue
            target = self._layers[i].blobs
            for j, blob in enumerate(target):
                owner = self.param_owners[self.param_id_vecs[i][j]]
                if j not in datasets:
                    if owner >= 0:
                        continue          # shared params are saved once, by their owner
                    raise WeightsError(f"{source}: layer '{name}': incompatible number of "
                                       f"blobs, param {j} missing")
                value = datasets[j]
                if tuple(value.shape) != blob.shape:
                    raise WeightsError(
                        f"{source}: layer '{name}': cannot copy param {j}, shape "
                        f"{tuple(value.shape)} vs {blob.shape} in the net")
                blob.data.copy_(torch.from_numpy(value))
            if len(datasets) > len(target):
                raise WeightsError(f"{source}: layer '{name}': incompatible number of blobs, "
                                   f"source has {len(datasets)}, target {len(target)}")

    @exclusive("copy_from")
    def copy_from(self, path):
        """Load weights from a .caffemodel (binary, any version) or .caffemodel.h5."""
        path = str(path)
        if path.endswith(".h5"):
            self.copy_trained_layers_from_hdf5(formats.read_hdf5_weights(path), path)
        else:
            self.copy_trained_layers_from(formats.read_caffemodel(path), path)

    @exclusive("share_with")
    def share_trained_layers_with(self, other):
        """Use other's learned blobs (same storage) for the layers both nets have."""
        for i, layer in enumerate(other._layers):
            j = self.layer_index.get(other._layer_names[i])
            if j is None:
                continue
            target = self._layers[j].blobs
            if len(target) != len(layer.blobs):
                raise WeightsError(f"layer '{other._layer_names[i]}': incompatible number of "
                                   f"blobs for sharing")
            for k, (mine, theirs) in enumerate(zip(target, layer.blobs)):
                if mine.shape != theirs.shape:
                    raise WeightsError(f"layer '{other._layer_names[i]}': cannot share param "
                                       f"{k}, shape {theirs.shape} vs {mine.shape}")
                mine.share_data(theirs)

    def to_proto(self, write_diff=False, masters=None):
        """The NetParameter with learned blobs; `masters` (one blob per learnable param, a
        half-precision solver's float32 copies) replace the net's own values."""
        out = caffe_pb2.NetParameter()
        out.name = self.name
        for i, layer in enumerate(self._layers):
            proto = out.layer.add()
            layer.to_proto(write_diff, out=proto)
            if masters is not None:
                for j, pid in enumerate(self.param_id_vecs[i]):
                    blob_to_proto(masters[self.learnable_param_ids[pid]], proto.blobs[j],
                                  write_diff)
        return out

    def save(self, path, write_diff=False, masters=None):
        path = str(path)
        if path.endswith(".h5"):
            formats.write_hdf5_weights(path, self._hdf5_groups(write_diff, masters))
        else:
            formats.write_caffemodel(path, self.to_proto(write_diff, masters))

    def save_hdf5(self, path):
        """Write the learned blobs as a .caffemodel.h5 (Net::ToHDF5)."""
        formats.write_hdf5_weights(str(path), self._hdf5_groups(False))

    def load_hdf5(self, path):
        """Read learned blobs from an HDF5 weights file (Net::CopyTrainedLayersFromHDF5)."""
        path = str(path)
        self.copy_trained_layers_from_hdf5(formats.read_hdf5_weights(path), path)

    def _hdf5_groups(self, write_diff, masters=None):
        data, diff = {}, {}
        for i, layer in enumerate(self._layers):
            data[self._layer_names[i]], diff[self._layer_names[i]] = {}, {}
            for j, blob in enumerate(layer.blobs):
                if masters is not None:
                    blob = masters[self.learnable_param_ids[self.param_id_vecs[i][j]]]
                if self.param_owners[self.param_id_vecs[i][j]] < 0:
                    data[self._layer_names[i]][j] = _host(blob.data)
                if write_diff:
                    diff[self._layer_names[i]][j] = _host(blob.diff)
        return {"data": data, **({"diff": diff} if write_diff else {})}


def _host(tensor):
    """A NumPy copy for a weights file: float32 for half-precision blobs, as Caffe reads."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype in HALF_DTYPES else tensor).numpy()
