"""Net: the DAG of layers described by a NetParameter, built as Caffe's Net::Init does."""
import logging
import os

import torch

from . import formats, net_args, thread_policy
from .blob import HALF_DTYPES, Blob
from .errors import NetError, OutOfMemoryError
from .layer import at_layer, create_layer
from .log_text import printable
from .layers.python_layer import module_search_dir
from .net_dialects import mark_dialects
from .net_param import filter_net, insert_splits
from .proto import caffe_pb2
from .net_diffs import DiffPlan
from .net_guard import exclusive
from .net_weights import NetWeights
from .pycaffe import PycaffeNet

log = logging.getLogger("caffe")


class Net(PycaffeNet, NetWeights, DiffPlan):
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
        for layer, need in zip(self._layers, self.layer_need_backward):
            layer.need_backward = need
        self._plan_run()
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
    def _plan_run(self):
        """Per layer, once: its weighted tops; whether it runs fused with the next layer (a
        BatchNorm and the Scale in place on its top run as one batch-norm kernel); and whether
        it reads its input from a buffer of its own (below)."""
        n = len(self._layers)
        self._weighted_tops = [[(top[j], w) for j, w in enumerate(layer.loss_weights) if w]
                               for layer, top in zip(self._layers, self.top_vecs)]
        self._fuse_next = [False] * n
        for i in range(n - 1):
            self._fuse_next[i] = (
                self.layer_need_backward[i] == self.layer_need_backward[i + 1]
                and not self._fuse_next[i - 1 if i else 0]
                and self._layers[i].fuses_with(self._layers[i + 1], self.bottom_vecs[i],
                                               self.top_vecs[i], self.bottom_vecs[i + 1],
                                               self.top_vecs[i + 1]))
        # An in-place layer whose backward reads its input (BatchNorm on batch statistics)
        # would have to copy it. When a run covers the layer producing that blob too, the
        # producer writes into a hidden blob instead and the layer reads it there, writing
        # the blob as before: every visible blob ends as it would, without the copy. The
        # hidden blob shares the visible blob's diff, as in-place layers share it.
        self._hidden = [None] * n           # layer i's hidden input blob
        self._hidden_on = [False] * n       # whether the last run of layer i - 1 filled it
        self._alt_bottom, self._alt_top = list(self.bottom_vecs), list(self.top_vecs)
        for i in range(1, n):
            bottom, top, before = self.bottom_vecs[i], self.top_vecs[i], self.top_vecs[i - 1]
            if not (bottom and self.layer_need_backward[i] and not self._fuse_next[i - 1]
                    and self._layers[i - 1].type != "Input"     # filled from outside
                    and self._layers[i].wants_own_input(bottom, top)
                    and any(t is bottom[0] for t in before)
                    and not any(b is bottom[0] for b in self.bottom_vecs[i - 1])):
                continue
            hidden = Blob((), self.dtype, self.device)
            self._hidden[i] = hidden
            self._alt_bottom[i] = [hidden] + bottom[1:]
            self._alt_top[i - 1] = [hidden if t is bottom[0] else t for t in before]

    def _vecs(self, i):
        """Layer i's bottom and top vectors as the last forward ran it (hidden inputs)."""
        bottom = self._alt_bottom[i] if self._hidden_on[i] else self.bottom_vecs[i]
        on_top = i + 1 < len(self._layers) and self._hidden_on[i + 1]
        return bottom, self._alt_top[i] if on_top else self.top_vecs[i]

    @exclusive("forward")
    def forward_from_to(self, start, end):
        """Run layers start..end inclusive; return the weighted loss as a 0-d tensor."""
        # Half-precision nets add their losses up in float32.
        loss = torch.zeros((), dtype=torch.float32 if self.dtype in HALF_DTYPES else self.dtype,
                           device=self.device)
        layers, fuse, hidden, on = self._layers, self._fuse_next, self._hidden, \
            self._hidden_on
        i = start
        if hidden[i] is not None:
            on[i] = False          # its producer is not part of this run
        threads = thread_policy.for_forward(layers, self.bottom_vecs, self.top_vecs, start, end)
        try:
            while i <= end:
                layer = layers[i]
                if i + 1 < len(layers) and hidden[i + 1] is not None:
                    on[i + 1] = i < end
                bottom, top = self._vecs(i)
                if fuse[i] and i < end:
                    # A fused pair is one step to the hooks: both layers' before, then both after.
                    for callback in self._before_forward:
                        callback(i)
                        callback(i + 1)
                    layer.reshape(bottom, top)
                    nb, nt = self._vecs(i + 1)
                    layers[i + 1].reshape(nb, nt)
                    layer.forward_fused(bottom, top, layers[i + 1], nb, nt)
                    for callback in self._after_forward:
                        callback(i)
                        callback(i + 1)
                    i += 2
                    continue
                for callback in self._before_forward:
                    callback(i)
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
                for blob, w in self._weighted_tops[i]:
                    loss = loss + w * blob.data.sum()
                for callback in self._after_forward:
                    callback(i)
                i += 1
        except OutOfMemoryError as e:
            raise at_layer(e, layers[i]) from None
        finally:
            threads.close()
        return loss

    def _share_hidden_diff(self, i):
        if self._hidden_on[i]:
            hidden, blob = self._hidden[i], self.bottom_vecs[i][0]
            if not hidden.shares_diff_with(blob):
                hidden.share_diff(blob)

    @exclusive("backward")
    def backward_from_to(self, start, end):
        if self.recycle_diffs:
            self._plan_diffs()
        i = start
        n = len(self._layers)
        try:
            while i >= end:
                self._share_hidden_diff(i)
                if i + 1 < n:
                    self._share_hidden_diff(i + 1)
                if i > end and self._fuse_next[i - 1] and self.layer_need_backward[i]:
                    for callback in self._before_backward:
                        callback(i)
                        callback(i - 1)
                    self._share_hidden_diff(i - 1)
                    bottom, top = self._vecs(i - 1)
                    self._layers[i - 1].backward_fused(
                        top, self.bottom_need_backward[i - 1], bottom, self._layers[i],
                        self.bottom_need_backward[i])
                    for callback in self._after_backward:
                        callback(i)
                        callback(i - 1)
                    i -= 2
                    continue
                for callback in self._before_backward:
                    callback(i)
                if self.layer_need_backward[i]:
                    bottom, top = self._vecs(i)
                    self._layers[i].backward(top, self.bottom_need_backward[i], bottom)
                for callback in self._after_backward:
                    callback(i)
                i -= 1
        except OutOfMemoryError as e:
            raise at_layer(e, self._layers[i]) from None

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
