"""Net: the DAG of layers described by a NetParameter, built as Caffe's Net::Init does."""
import logging
import os
from collections import OrderedDict
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np
import torch

from . import formats, net_args, thread_policy
from .blob import HALF_DTYPES, Blob, PyBlob
from .blob_proto import blob_to_proto, copy_proto_into, proto_shape, shape_matches_proto
from .errors import CaffeError, NetError, OutOfMemoryError, WeightsError
from .layer import at_layer
from .layers import create_layer
from .log_text import printable
from .layers.python_layer import BlobVec, module_search_dir
from .net_dialects import mark_dialects
from .net_param import filter_net, insert_splits
from .proto import caffe_pb2
from .net_guard import exclusive, used_by_threads
from .net_plan import NetPlan

log = logging.getLogger("caffe")


class PyLayer:
    """pycaffe's face of a layer: `type`, `blobs` as NumPy-backed views, and the calls."""

    def __init__(self, layer, bottom, top):
        self._layer, self._bottom, self._top = layer, bottom, top

    type = property(lambda self: self._layer.type)
    name = property(lambda self: self._layer.name)
    # BVLC's BlobVec: indexable NumPy-faced blobs, grown with add_blob(*shape).
    blobs = property(lambda self: BlobVec(self._layer))

    def setup(self, bottom=None, top=None):
        self._layer.layer_setup(self._bottom, self._top)

    def reshape(self, bottom=None, top=None):
        self._layer.reshape(self._bottom, self._top)

    def forward(self, bottom=None, top=None):
        self._layer.forward(self._bottom, self._top)

    def backward(self, top=None, propagate_down=None, bottom=None):
        self._layer.backward(self._top, propagate_down or [True] * len(self._bottom),
                             self._bottom)

    def __getattr__(self, name):
        # pycaffe scripts call their own methods on Python layers through net.layers.
        impl = getattr(self._layer, "impl", None)
        if impl is not None and not name.startswith("__"):
            return getattr(impl, name)
        raise AttributeError(f"layer '{self._layer.name}' has no attribute '{name}'")

    def __repr__(self):
        return f"<Layer '{self.name}' ({self.type})>"


class BlobDict(OrderedDict):
    """An ordered name -> blob mapping that prints as a table of shapes."""

    def __repr__(self):
        rows = [f"  {name:<30} {_shape_of(v)}" for name, v in self.items()]
        return "\n".join([f"{type(self).__name__}({len(self)} entries)"] + rows)


def _collect(values, batch_value):
    """Gather one batch's output: per-item rows, or one value for a scalar (loss) output."""
    if np.ndim(batch_value):
        values.extend(batch_value.copy())
    else:
        values.append(batch_value.copy())


def _shape_of(value):
    if isinstance(value, list):
        return "  ".join(str(tuple(b.shape)) for b in value)
    return str(tuple(value.shape))



def _results(views, net):
    """BVLC's views of the blobs; copies, taken before the lock is released, once several
    threads use the net (caffe.net_guard): another thread's call would overwrite the views."""
    return {k: v.copy() for k, v in views.items()} if used_by_threads(net) else views


class Net:
    """A net built from a NetParameter (or prototxt path) in a phase, as Caffe's Net.

    pycaffe's forms all work: Net(model, phase), Net(model, weights, phase),
    Net(model, phase=TEST, weights=w, level=0, stages=[...]); a phase may also be named
    ('train', 'TEST'). A weights file given as the model, or a prototxt given as the
    weights (arguments swapped), is refused naming the argument.
    """

    def __init__(self, param, *args, phase=None, level=0, stages=(), weights=None,
                 dtype=torch.float32, device=None):
        from . import common
        weights, phase = net_args.weights_and_phase(args, weights, phase)
        folder, self._source = None, "the NetParameter given"
        if net_args.is_path(param):
            self._source = f"'{os.fsdecode(param)}'"
            folder = os.path.dirname(os.path.abspath(os.fsdecode(param)))
            param = net_args.read_model(param, weights)
        if weights:
            net_args.check_weights(weights)
        param_copy = caffe_pb2.NetParameter()
        param_copy.CopyFrom(param)
        if folder is None:
            # An in-memory net in an old format (a solver's inline V1 net_param) is upgraded
            # as a net file is on reading.
            formats.upgrade_net_if_needed(param_copy, self._source)
        if phase is not None:
            param_copy.state.phase = phase
        if level:
            param_copy.state.level = level
        if stages:
            param_copy.state.stage.extend(stages or ())
        self.dtype = dtype
        self.device = torch.device(device if device is not None else common.device())
        if folder is None:
            self._init(param_copy)
        else:
            # pycaffe users keep Python-layer modules beside the prototxt.
            with module_search_dir(folder):
                self._init(param_copy)
        if weights:
            self.copy_from(weights)

    # -- construction -----------------------------------------------------------
    def _init(self, in_param):
        self.phase = in_param.state.phase
        param = mark_dialects(filter_net(in_param))
        if not param.layer:
            # Caffe would build an empty net that fails on first use; say why now.
            raise NetError(
                f"net '{in_param.name}' from {getattr(self, '_source', 'its NetParameter')} "
                + (f"has no layers" if not in_param.layer else
                   f"keeps none of its {len(in_param.layer)} layers in phase "
                   f"{caffe_pb2.Phase.Name(self.phase)} (level {in_param.state.level}, stages "
                   f"{list(in_param.state.stage)}): every layer's include/exclude rules "
                   f"filter it out"))
        param = insert_splits(param)
        self.name = param.name
        self.param = param
        self._layers, self._layer_names = [], []
        self._blobs, self._blob_names, self.blob_index = [], [], {}
        self.bottom_ids, self.top_ids = [], []
        self.bottom_vecs, self.top_vecs = [], []
        self.bottom_need_backward, self.layer_need_backward = [], []
        self.blob_need_backward = []
        self._blob_loss_weights = []
        self.input_ids = []
        self._params, self.param_owners, self.param_layer_indices = [], [], []
        self.param_display_names, self.param_names_index = [], {}
        self.param_id_vecs = []
        self.learnable_params, self.learnable_param_ids = [], []
        self.params_lr, self.params_weight_decay = [], []
        self.has_params_lr, self.has_params_decay = [], []
        available, memory = {}, 0
        for layer_id, lp in enumerate(param.layer):
            if not lp.HasField("phase"):
                lp.phase = self.phase
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise NetError(f"layer '{lp.name}': propagate_down must be given for every "
                               f"bottom or none ({len(lp.propagate_down)} vs {len(lp.bottom)})")
            log.info("Creating Layer %s", printable(lp.name))
            layer = create_layer(lp, self.dtype, self.device)
            self._layers.append(layer)
            self._layer_names.append(lp.name)
            need_backward = False
            bottoms, bottom_ids, bottom_nb = [], [], []
            for j, name in enumerate(lp.bottom):
                if name not in self.blob_index:
                    raise NetError(f"layer '{lp.name}' ({lp.type}): unknown bottom blob '{name}' "
                                   f"(bottom index {j})")
                bid = self.blob_index[name]
                log.info("%s <- %s", printable(lp.name), printable(name))
                available.pop(name, None)
                nb = self.blob_need_backward[bid]
                if len(lp.propagate_down):
                    nb = lp.propagate_down[j]
                bottoms.append(self._blobs[bid])
                bottom_ids.append(bid)
                bottom_nb.append(nb)
                need_backward |= self.blob_need_backward[bid]
            tops, top_ids = [], []
            names = list(lp.top)
            if layer.auto_top_blobs:
                needed = max(layer.min_top_blobs, layer.exact_num_top_blobs)
                names += [None] * max(0, needed - len(names))
            for j, name in enumerate(names):
                if name is None:
                    # Caffe's AppendTop without a name map: an anonymous blob that no
                    # later layer can name and that is no net output.
                    name = "(automatic)"
                    log.info("%s -> %s", printable(lp.name), printable(name))
                    bid = self._new_blob(name)
                elif j < len(lp.bottom) and lp.bottom[j] == name:
                    bid = self.blob_index[name]          # in place
                    log.info("%s -> %s (in-place)", printable(lp.name), printable(name))
                    available[name] = bid
                elif name in self.blob_index:
                    raise NetError(f"layer '{lp.name}': top blob '{name}' produced by multiple "
                                   f"sources")
                else:
                    log.info("%s -> %s", printable(lp.name), printable(name))
                    bid = self._new_blob(name)
                    self.blob_index[name] = bid
                    if lp.type == "Input":
                        self.input_ids.append(bid)
                    available[name] = bid
                tops.append(self._blobs[bid])
                top_ids.append(bid)
            self.bottom_vecs.append(bottoms)
            self.bottom_ids.append(bottom_ids)
            self.bottom_need_backward.append(bottom_nb)
            self.top_vecs.append(tops)
            self.top_ids.append(top_ids)
            log.info("Setting up %s", printable(lp.name))
            layer.layer_setup(bottoms, tops)
            for j, bid in enumerate(top_ids):
                self._blob_loss_weights[bid] = layer.loss(j)
                log.info("Top shape: %s", self._blobs[bid].shape_string)
                if layer.loss(j):
                    log.info("    with loss weight %g", layer.loss(j))
                # The dtype's size, not .data: reading data would allocate the blob now.
                memory += self._blobs[bid].count() * self.dtype.itemsize
            log.info("Memory required for data: %d", memory)
            if len(lp.param) > len(layer.blobs):
                raise NetError(f"layer '{lp.name}': {len(lp.param)} param specs given but the "
                               f"layer has {len(layer.blobs)} learned blobs")
            for pid in range(len(layer.blobs)):
                spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
                learn = spec.lr_mult != 0
                need_backward |= learn
                layer.param_propagate_down[pid] = learn
            self.param_id_vecs.append([])
            for pid in range(len(layer.blobs)):
                self._append_param(layer_id, pid)
            self.layer_need_backward.append(need_backward)
            if need_backward:
                for bid in top_ids:
                    self.blob_need_backward[bid] = True
        self._prune_backward(param.force_backward)
        self.force_backward = bool(param.force_backward)
        for layer, need in zip(self._layers, self.layer_need_backward):
            layer.need_backward = need
        self._weighted_tops = [[(top[j], w) for j, w in enumerate(layer.loss_weights) if w]
                               for layer, top in zip(self._layers, self.top_vecs)]
        self.plan = NetPlan(self)
        # Caffe keeps the outputs in a std::set: sorted by name.
        self.output_ids = [available[n] for n in sorted(available)]
        for name in sorted(available):
            log.info("This network produces output %s", printable(name))
        self.layer_index = {n: i for i, n in enumerate(self._layer_names)}
        self._share_weights()
        log.info("Network initialization done.")

    def _new_blob(self, name):
        self._blobs.append(Blob((), self.dtype, self.device))
        self._blobs[-1].name = name     # named in allocation errors
        self._blob_names.append(name)
        self.blob_need_backward.append(False)
        self._blob_loss_weights.append(0.0)
        return len(self._blobs) - 1

    def _append_param(self, layer_id, pid):
        lp = self.param.layer[layer_id]
        layer = self._layers[layer_id]
        spec = lp.param[pid] if pid < len(lp.param) else caffe_pb2.ParamSpec()
        name = spec.name
        net_pid = len(self._params)
        self._params.append(layer.blobs[pid])
        layer.blobs[pid].name = f"{lp.name} param {pid}"
        self.param_id_vecs[layer_id].append(net_pid)
        self.param_layer_indices.append((layer_id, pid))
        self.param_display_names.append(name or str(pid))
        if not name or name not in self.param_names_index:
            self.param_owners.append(-1)
            if name:
                self.param_names_index[name] = net_pid
            self.learnable_param_ids.append(len(self.learnable_params))
            self.learnable_params.append(layer.blobs[pid])
            self.has_params_lr.append(spec.HasField("lr_mult"))
            self.has_params_decay.append(spec.HasField("decay_mult"))
            self.params_lr.append(spec.lr_mult)
            self.params_weight_decay.append(spec.decay_mult)
            return
        owner_pid = self.param_names_index[name]
        self.param_owners.append(owner_pid)
        owner_layer, owner_index = self.param_layer_indices[owner_pid]
        log.info("Sharing parameters '%s' owned by layer '%s', param index %d",
                 printable(name), printable(self._layer_names[owner_layer]), owner_index)
        this, owner = layer.blobs[pid], self._layers[owner_layer].blobs[owner_index]
        permissive = spec.share_mode == caffe_pb2.ParamSpec.PERMISSIVE
        if permissive and this.count() != owner.count():
            raise NetError(f"cannot share param '{name}' owned by layer "
                           f"'{self._layer_names[owner_layer]}' with layer '{lp.name}': count "
                           f"mismatch, owner {owner.shape} vs {this.shape}")
        if not permissive and this.shape != owner.shape:
            raise NetError(f"cannot share param '{name}' owned by layer "
                           f"'{self._layer_names[owner_layer]}' with layer '{lp.name}': shape "
                           f"mismatch, owner {owner.shape} vs {this.shape} (set share_mode: "
                           f"PERMISSIVE to share equal counts)")
        lid = self.learnable_param_ids[owner_pid]
        self.learnable_param_ids.append(lid)
        for has, values, field in ((self.has_params_lr, self.params_lr, "lr_mult"),
                                   (self.has_params_decay, self.params_weight_decay,
                                    "decay_mult")):
            if spec.HasField(field):
                if has[lid] and values[lid] != getattr(spec, field):
                    raise NetError(f"shared param '{name}' has mismatched {field}")
                has[lid], values[lid] = True, getattr(spec, field)

    def _prune_backward(self, force_backward):
        """Skip backward where no loss depends on a layer (Net::Init's second pass)."""
        under_loss, skip_backprop = set(), set()
        for i in reversed(range(len(self._layers))):
            contributes, skip = False, True
            for j, bid in enumerate(self.top_ids[i]):
                name = self._blob_names[bid]
                if self._layers[i].loss(j) or name in under_loss:
                    contributes = True
                    if name not in skip_backprop:
                        skip = False
                if contributes and not skip:
                    break
            if self.layer_need_backward[i] and skip:
                self.layer_need_backward[i] = False
                self.bottom_need_backward[i] = [False] * len(self.bottom_ids[i])
            if not contributes:
                self.layer_need_backward[i] = False
            log.info("%s %s backward computation.", printable(self._layer_names[i]),
                     "needs" if self.layer_need_backward[i] else "does not need")
            for j, bid in enumerate(self.bottom_ids[i]):
                name = self._blob_names[bid]
                if contributes:
                    under_loss.add(name)
                else:
                    self.bottom_need_backward[i][j] = False
                if not self.bottom_need_backward[i][j]:
                    skip_backprop.add(name)
        if force_backward:
            for i, layer in enumerate(self._layers):
                self.layer_need_backward[i] = True
                for j, bid in enumerate(self.bottom_ids[i]):
                    nb = self.bottom_need_backward[i][j] or layer.allow_force_backward(j)
                    self.bottom_need_backward[i][j] = nb
                    self.blob_need_backward[bid] = self.blob_need_backward[bid] or nb
                layer.param_propagate_down = [True] * len(layer.blobs)

    # -- running ----------------------------------------------------------------
    @property
    def optimize(self):
        """Whether the plan (caffe.net_plan) may fuse layers, hide inputs and recycle diffs;
        False runs Caffe's plain layer-by-layer loop (for debugging, and as the tests' oracle).
        Set it before a backward with recycle_diffs: diffs recycled once keep sharing storage."""
        return self.plan.optimize

    @optimize.setter
    def optimize(self, value):
        if bool(value) == self.plan.optimize:
            return
        recycle = self.plan.recycle_diffs
        self.plan.settle()
        self.plan = NetPlan(self, bool(value))
        self.plan.recycle_diffs = recycle

    @property
    def recycle_diffs(self):
        """Whether backward shares diff storage between blobs (see NetPlan.recycle_diffs)."""
        return self.plan.recycle_diffs

    @recycle_diffs.setter
    def recycle_diffs(self, value):
        self.plan.recycle_diffs = bool(value)

    @exclusive("forward")
    def forward_from_to(self, start, end):
        """Run layers start..end inclusive (Net::ForwardFromTo); return the weighted loss as a
        0-d tensor. Each step of the plan is one layer, or a fused pair hooks see as two."""
        # Half-precision nets add their losses up in float32.
        program = self.plan.program(start, end)
        if program is not None:
            loss, stopped = program.run()
            self.plan.replay = True
            if stopped is None:
                return loss
            # A data layer changed its tops' shapes: the rest layer by layer, a new program
            # next time.
            start = stopped + 1
            if start > end:
                return loss
        else:
            loss = torch.zeros((), dtype=torch.float32 if self.dtype in HALF_DTYPES
                               else self.dtype, device=self.device)
        self.plan.settle()
        if start == 0 and end == len(self._layers) - 1:
            self.plan.replay = False
        threads = thread_policy.for_forward(self._layers, self.bottom_vecs, self.top_vecs,
                                            start, end)
        try:
            for step in self.plan.forward_steps(start, end):
                try:
                    for callback in self._before_forward:
                        for i in step.layers:
                            callback(i)
                    step.reshape()
                    step.forward()
                except OutOfMemoryError as e:
                    raise at_layer(e, self._layers[step.layers[0]]) from None
                for i in step.layers:
                    for blob, w in self._weighted_tops[i]:
                        loss = loss + w * blob.data.sum()
                for callback in self._after_forward:
                    for i in step.layers:
                        callback(i)
        finally:
            threads.close()
        return loss

    @exclusive("backward")
    def backward_from_to(self, start, end):
        """Run backward from layer start down to layer end inclusive (Net::BackwardFromTo)."""
        self.plan.settle()
        if self.plan.replay:
            self._replay_forward()
        for step in self.plan.backward_steps(start, end):
            try:
                for callback in self._before_backward:
                    for i in reversed(step.layers):
                        callback(i)
                step.backward()
            except OutOfMemoryError as e:
                raise at_layer(e, self._layers[step.layers[-1]]) from None
            for callback in self._after_backward:
                for i in reversed(step.layers):
                    callback(i)

    def _replay_forward(self):
        """A TEST net's forward ran as the inference program, which keeps no state for
        backward (pooling masks, saved inputs): run it again layer by layer, on the batch the
        data layers gave (they do not run again)."""
        self.plan.replay = False
        for step in self.plan.forward_steps(0, len(self._layers) - 1):
            if all(not self.bottom_vecs[i] and self._layers[i].type != "Input"
                   for i in step.layers):
                continue
            step.reshape()
            step.forward()

    def forward_prefilled(self):
        return self.forward_from_to(0, len(self._layers) - 1)

    def backward_all(self):
        self.backward_from_to(len(self._layers) - 1, 0)

    @exclusive("forward_backward")
    def forward_backward(self):
        loss = self.forward_prefilled()
        self.backward_all()
        return loss

    @exclusive("reshape")
    def reshape_all(self):
        for layer, bottom, top in zip(self._layers, self.bottom_vecs, self.top_vecs):
            layer.reshape(bottom, top)
        self.set_loss_scale(self.loss_scale)    # the loss tops' diffs: loss_weight x scale

    # Backward starts from loss_weight x loss_scale: float16 training's guard against underflow.
    loss_scale = 1.0

    def set_loss_scale(self, scale):
        self.loss_scale = float(scale)
        for layer, top in zip(self._layers, self.top_vecs):
            for blob, w in zip(top, layer.loss_weights):
                if w:
                    blob.diff.fill_(w * self.loss_scale)

    def clear_param_diffs(self):
        for blob in self.learnable_params:
            blob.diff.zero_()

    # -- learned blobs: Net::CopyTrainedLayersFrom*, ShareTrainedLayersWith, ToProto, ToHDF5
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

    # -- pycaffe's interface: views of blobs, params and layers, hooks, forward(**inputs) ------
    # The views are built once, as pycaffe caches them: a net's blobs and layers are fixed
    # after construction, and scripts index net.blobs in their inner loops.
    @property
    def blobs(self):
        if "_blobs_view" not in self.__dict__:
            self._blobs_view = BlobDict((n, PyBlob(b))
                                        for n, b in zip(self._blob_names, self._blobs))
        return self._blobs_view

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def params(self):
        if "_params_view" not in self.__dict__:
            self._params_view = BlobDict(
                (name, [PyBlob(b) for b in layer.blobs])
                for name, layer in zip(self._layer_names, self._layers) if layer.blobs)
        return self._params_view

    @property
    def layers(self):
        if "_layers_view" not in self.__dict__:
            self._layers_view = [PyLayer(*t)
                                 for t in zip(self._layers, self.bottom_vecs, self.top_vecs)]
        return self._layers_view

    @property
    def layer_dict(self):
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self.input_ids]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self.output_ids]

    @property
    def top_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self.top_ids))

    @property
    def bottom_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self.bottom_ids))

    def _top_ids(self, i):
        return list(self.top_ids[i])

    def _bottom_ids(self, i):
        return list(self.bottom_ids[i])

    @property
    def _inputs(self):
        return list(self.input_ids)

    @property
    def _outputs(self):
        return list(self.output_ids)

    # pycaffe's layer hooks: callback(i) around layer i's step, as Net::ForwardFromTo and
    # Net::BackwardFromTo run them (BVLC's python/train.py times layers with them).
    _before_forward = _after_forward = _before_backward = _after_backward = ()

    def before_forward(self, callback):
        """Call callback(i) before layer i's forward step."""
        self._before_forward = self._before_forward + (callback,)

    def after_forward(self, callback):
        """Call callback(i) once layer i's forward step is done."""
        self._after_forward = self._after_forward + (callback,)

    def before_backward(self, callback):
        """Call callback(i) before layer i's backward step (also where it has none)."""
        self._before_backward = self._before_backward + (callback,)

    def after_backward(self, callback):
        """Call callback(i) once layer i's backward step is done; data-parallel training
        starts all-reducing a layer's gradients from there."""
        self._after_backward = self._after_backward + (callback,)

    # -- pycaffe's forward and backward -------------------------------------------------
    def _layer_id(self, name):
        if name not in self.layer_index:
            raise CaffeError(f"net '{self.name}' has no layer named '{name}'")
        return self.layer_index[name]

    def _end_blobs(self, end):
        if end in self.blob_index:
            return [end]
        return [self._blob_names[b] for b in self.top_ids[self._layer_id(end)]]

    def _forward(self, start, end):
        return float(self.forward_from_to(start, end))

    def _backward(self, start, end):
        self.backward_from_to(start, end)

    @exclusive("forward")
    def forward(self, blobs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                end: Optional[str] = None, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Run forward (optionally from layer `start` to layer `end`) and return outputs."""
        blobs = list(blobs or [])
        start_ind = self._layer_id(start) if start is not None else 0
        if end is not None:
            end_ind = self._layer_id(end)
            outputs = set(self._end_blobs(end) + blobs)
        else:
            end_ind = len(self._layers) - 1
            outputs = set(self.outputs + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise CaffeError(f"input blob arguments {sorted(kwargs)} do not match net "
                                 f"inputs {self.inputs}")
            for name, value in kwargs.items():
                blob = self._blobs[self.blob_index[name]]
                if np.shape(value)[0] != blob.shape[0]:
                    raise CaffeError(f"input '{name}' is not batch sized: {np.shape(value)[0]} "
                                     f"vs {blob.shape[0]}")
                blob.data_numpy()[...] = value
        self._forward(start_ind, end_ind)
        return _results({out: self._blobs[self.blob_index[out]].data_numpy() for out in outputs},
                        self)

    @exclusive("backward")
    def backward(self, diffs: Optional[Iterable[str]] = None, start: Optional[str] = None,
                 end: Optional[str] = None, **kwargs: Any) -> Dict[str, np.ndarray]:
        """Run backward (from layer `start` down to layer `end`) and return input diffs."""
        diffs = list(diffs or [])
        start_ind = self._layer_id(start) if start is not None else len(self._layers) - 1
        if end is not None:
            # BVLC 1.0 returns the diffs of the end layer's bottoms: what backward computed.
            end_ind = self._layer_id(end)
            outputs = set(self.bottom_names[end] + diffs)
        else:
            end_ind = 0
            outputs = set(self.inputs + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise CaffeError(f"top diff arguments {sorted(kwargs)} do not match net "
                                 f"outputs {self.outputs}")
            for name, value in kwargs.items():
                blob = self._blobs[self.blob_index[name]]
                if np.shape(value)[0] != blob.shape[0]:
                    raise CaffeError(f"diff '{name}' is not batch sized")
                blob.diff_numpy()[...] = value
        self._backward(start_ind, end_ind)
        return _results({out: self._blobs[self.blob_index[out]].diff_numpy() for out in outputs},
                        self)

    @exclusive("forward_all")
    def forward_all(self, blobs: Optional[Iterable[str]] = None,
                    **kwargs: Any) -> Dict[str, np.ndarray]:
        """Forward whole inputs batch by batch; return concatenated outputs."""
        all_outs: Dict[str, list] = {out: [] for out in set(self.outputs + list(blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, value in outs.items():
                _collect(all_outs[out], value)
        return self._trim(all_outs, kwargs)

    @exclusive("forward_backward_all")
    def forward_backward_all(self, blobs: Optional[Iterable[str]] = None,
                             diffs: Optional[Iterable[str]] = None,
                             **kwargs: Any) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
        """Forward and backward whole inputs batch by batch."""
        all_outs: Dict[str, list] = {out: [] for out in set(self.outputs + list(blobs or []))}
        all_diffs: Dict[str, list] = {d: [] for d in set(self.inputs + list(diffs or []))}
        forward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.inputs})
        backward_batches = self._batch({k: v for k, v in kwargs.items() if k in self.outputs})
        for fb, bb in zip(forward_batches, backward_batches):
            for out, value in self.forward(blobs=blobs, **fb).items():
                _collect(all_outs[out], value)
            for d, value in self.backward(diffs=diffs, **bb).items():
                _collect(all_diffs[d], value)
        return self._trim(all_outs, kwargs), self._trim(all_diffs, kwargs)

    def _batch(self, blobs):
        num = len(next(iter(blobs.values()))) if blobs else 0
        batch_size = self._blobs[self.input_ids[0]].shape[0] if self.input_ids else 1
        remainder = num % batch_size
        for b in range(num // batch_size):
            i = b * batch_size
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                pad_shape = (batch_size - remainder,) + tuple(np.shape(blobs[name])[1:])
                padded[name] = np.concatenate([blobs[name][-remainder:], np.zeros(pad_shape)])
            yield padded
        if not blobs:
            yield {}

    def _trim(self, outs, kwargs):
        arrays = {k: np.asarray(v) for k, v in outs.items()}
        if kwargs:
            # Drop the padding of the last batch (scalar outputs have one value per batch).
            n = len(next(iter(kwargs.values())))
            arrays = {k: v[:n] if v.ndim > 1 or len(v) > n else v for k, v in arrays.items()}
        return arrays

    @exclusive("reshape")
    def reshape(self) -> None:
        self.reshape_all()

    def share_with(self, other: "Net") -> None:
        self.share_trained_layers_with(other)

    def _set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        self.set_input_arrays(data, labels)

    @exclusive("set_input_arrays")
    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        layer = self._layers[0]
        if not hasattr(layer, "reset"):
            raise CaffeError("set_input_arrays needs a MemoryData layer as the first layer")
        layer.reset(np.ascontiguousarray(data, dtype=np.float32),
                    np.ascontiguousarray(labels, dtype=np.float32))

    def __repr__(self):
        rows = [f"  {n:<28} {l.type:<22} -> " +
                ", ".join(f"{self._blob_names[b]} {self._blobs[b].shape}" for b in ids)
                for n, l, ids in zip(self._layer_names, self._layers, self.top_ids)]
        return "\n".join([f"Net '{self.name}' ({len(self._layers)} layers)"] + rows)

    # Jupyter shows a net as its layer/blob/param table with the graph (caffe.vis.notebook).
    def _repr_html_(self):
        from .vis.notebook import net_html
        return net_html(self)

    def _repr_svg_(self):
        from .vis.notebook import net_svg
        return net_svg(self)


def _host(tensor):
    """A NumPy copy for a weights file: float32 for half-precision blobs, as Caffe reads."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.dtype in HALF_DTYPES else tensor).numpy()
