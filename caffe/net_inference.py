"""The inference program: a whole forward of a TEST-phase net as one compiled list of torch calls.

Layer-by-layer execution (caffe.net_plan) stays the reference, and the path of every forward
of a TRAIN net that a backward follows, of a force_backward net, of part of a net, and of nets
with hooks or Python layers. (A backward after a TEST net's program forward first runs that
forward again layer by layer: Net._replay_forward.)
For the others (deploy nets, `caffe test`, `caffe time`'s whole-net pass, solvers' test nets)
the plan compiles the layers once into a program, as OpenCV dnn and ONNX Runtime do:

- a Convolution and the in-place BatchNorm / Scale / Bias and activation (ReLU, ReLU6, PReLU)
  after it run as one call: statistics and scales folded into the weights and bias (in
  float64, then the net's dtype), the activation fused. Large float32 convolutions run on
  oneDNN with their weights reordered once into its blocked layout and channels-last
  activations: the per-call reorders of weights and NCHW activations took about half of a
  ResNet-50 forward;
- a BatchNorm / Scale / Bias chain elsewhere is one multiply-add (and its activation);
- other layers run through the torch exporter's converters (caffe.export.torch_module), and a
  layer without one through its own forward on its blobs, after its bottoms are written.

Values live in the program's slots; blobs take them when the forward ends: at once where a
pycaffe array of the blob may be alive, lazily (on first read, Blob's pending value) for the
others. Every blob reads as the plain path leaves it. The program is rebuilt when the inputs'
shapes change or a learned blob may have been written: torch's version counters see tensor
writes, the writers that bypass them (solvers' fused updates, weights loaded) say so
(caffe.blob.note_weight_write), and NumPy arrays handed out since the build, or alive and
changed since, stand for the others.
"""
import os
import time

import torch

from . import thread_policy
from .blob import weight_writes
from .errors import OutOfMemoryError
from .layer import at_layer
from .proto import caffe_pb2

ENV = "CAFFE_FAST_INFERENCE"     # "0" turns the program off (Net.optimize = False: everything)
# Multiply-adds per image from which a float32 convolution runs on oneDNN with reordered
# weights: below it the reorder of its input costs more than it saves (a 3x3 convolution of
# 3 to 10 channels at 12x12: 6 us as a plain call, 21 us through oneDNN's blocked path).
ONEDNN_MIN_MACS = 300_000
AFFINE_TYPES = ("BatchNorm", "Scale", "Bias")
CONVOLUTION_TYPES = ("Convolution", "ConvolutionDepthwise", "DepthwiseConvolution")
ACTIVATION_TYPES = ("ReLU", "ReLU6", "PReLU")
# Converter ops that take channels-last inputs as they are (torch's kernels follow either
# layout; the others may view their input as NCHW memory and get it contiguous).
LAYOUT_FREE = {"Pooling", "Eltwise", "Concat", "ReLU", "ReLU6", "Sigmoid", "TanH", "Dropout",
               "Split", "Softmax", "InnerProduct", "Flatten", "Power", "AbsVal", "ELU", "Clip",
               "Swish", "PReLU", "Scale", "Bias", "BatchNorm", "Silence", "Reshape"}


def enabled():
    return os.environ.get(ENV, "1").strip() not in ("0", "false", "off", "no")


def why_not(net, start, end):
    """None where a forward of layers start..end may run as a program, else the reason."""
    if not enabled():
        return f"{ENV}=0"
    if start != 0 or end != len(net._layers) - 1:
        return "a forward of part of the net"
    if net._before_forward or net._after_forward:
        return "forward hooks"
    if net.device.type != "cpu" or net.dtype not in (torch.float32, torch.float64):
        return "not a float32 / float64 CPU net"
    return net.plan.fixed_reason


def fixed_reason(net):
    """The reason a net never runs as a program, from what its build fixed (NetPlan reads
    it once, so that a forward does not walk the layers), or None."""
    if net.force_backward:
        return "force_backward"
    if any(net.layer_need_backward) and net.phase != caffe_pb2.TEST:
        return "a backward may follow"
    if any(layer.type == "Python" for layer in net._layers):
        return "Python layers"
    return None


class _Reshaped(Exception):
    """A layer running on its blobs (a data layer) changed its tops' shapes: the program was
    built for others."""


class Program:
    """One net's compiled forward. run() returns the weighted loss, as forward_from_to."""

    def __init__(self, net, probe=None):
        self.net = net
        self.probe = probe or thread_policy.Probe()    # kept across rebuilds (NetPlan)
        self.probe.work = None                          # the shapes may have changed
        self._build()

    # -- validity ------------------------------------------------------------------------
    def _param_key(self):
        return [weight_writes()] + [
            (id(m.buf), m.buf._version if m.buf is not None else -1, m.handed_out)
            for m in (blob._data for blob in self.params)]

    def stale(self):
        """Whether the inputs' shapes or a learned blob changed since the build."""
        if self.outdated or [b.shape for b in self.input_blobs] != self.input_shapes:
            return True
        if self._param_key() != self.param_key:
            return True
        return any(not torch.equal(blob._data.view, copy) for blob, copy in self.watched)

    # -- building -------------------------------------------------------------------------
    def _build(self):
        net = self.net
        self.outdated = False
        for layer, bottom, top in zip(net._layers, net.bottom_vecs, net.top_vecs):
            layer.reshape(bottom, top)
        self.params = [b for layer in net._layers for b in layer.blobs]
        self.param_key = self._param_key()
        # Learned blobs whose pycaffe array is alive: compared with a copy at each forward.
        self.watched = [(b, b._data.view.clone()) for b in self.params
                        if b._data.has_live_array() and b._data.view is not None]
        self.slot_of = {}                   # blob (by id) -> the slot holding its newest value
        self.nslots = 0
        self.inputs, self.ops, self.writes, self.op_layer = [], [], [], []
        self.storage_slots = []             # slots that hold a blob's own storage
        self.loss_slots = []                # (op index, slot, loss weight)
        builder = _builder()
        i, n = 0, len(net._layers)
        while i < n:
            layer = net._layers[i]
            if layer.type == "Input":
                for blob in net.top_vecs[i]:
                    slot = self._new_slot(blob)
                    self.inputs.append((slot, blob))
                    self.storage_slots.append(slot)
                i += 1
                continue
            j = _chain_end(net, i)
            if j is not None:
                op = _fused_op(net, i, j)
                self._add(op, i, j)
                i = j + 1
                continue
            self._add_layer(builder, i)
            i += 1
        self.input_blobs = [blob for _, blob in self.inputs]
        self.reader = {}        # input slot -> the first layer reading it (errors name it)
        for slot, blob in self.inputs:
            self.reader[slot] = next((k for k, bottom in enumerate(net.bottom_vecs)
                                      if any(b is blob for b in bottom)), 0)
        self.input_shapes = [b.shape for b in self.input_blobs]
        finals = {}
        for writes in self.writes:
            for blob, slot in writes:
                finals[id(blob)] = (blob, slot)
        self.finals = list(finals.values())
        self.env = [None] * self.nslots

    def _new_slot(self, blob=None):
        slot = self.nslots
        self.nslots += 1
        if blob is not None:
            self.slot_of[id(blob)] = slot
        return slot

    def _ins(self, i):
        return [self.slot_of[id(b)] for b in self.net.bottom_vecs[i]]

    def _add(self, fn, first, last):
        """Add fn computing layers first..last: it reads their bottoms, writes their tops."""
        net = self.net
        ins = self._ins(first)
        tops = []
        for k in range(first, last + 1):
            for blob in net.top_vecs[k]:
                if not any(blob is t for t in tops):
                    tops.append(blob)
        outs = [self._new_slot(blob) for blob in tops]
        self.ops.append((fn, ins, outs))
        self.writes.append(list(zip(tops, outs)))
        self.op_layer.append(last)
        for k in range(first, last + 1):
            for blob, w in net._weighted_tops[k]:
                self.loss_slots.append((len(self.ops) - 1, self.slot_of[id(blob)], w))
        return outs

    def _add_layer(self, builder, i):
        net = self.net
        layer = net._layers[i]
        ops = builder.ops_for(net, i)
        if ops is None:
            plain = PlainLayer(layer, net.bottom_vecs[i], net.top_vecs[i])
            self.storage_slots.extend(self._add(plain, i, i))
            return
        # The converter's values by name: the layer's bottoms are the slots that hold them.
        names = {f"b{k}": slot for k, slot in enumerate(self._ins(i))}
        tops = net.top_vecs[i]
        for op in ops:
            ins = [names[v] for v in op.inputs]
            outs = []
            for v in op.outputs:
                if v.startswith("t") and v[1:].isdigit():
                    outs.append(self._new_slot(tops[int(v[1:])]))
                else:
                    outs.append(self._new_slot())
                names[v] = outs[-1]
            fn = op.forward
            if layer.type not in LAYOUT_FREE:
                fn = _contiguous(fn)
            self.ops.append((fn, ins, outs))
            self.writes.append([(tops[int(v[1:])], s) for v, s in zip(op.outputs, outs)
                                if v.startswith("t") and v[1:].isdigit()])
            self.op_layer.append(i)
        for blob, w in net._weighted_tops[i]:
            self.loss_slots.append((len(self.ops) - 1, self.slot_of[id(blob)], w))

    # -- running --------------------------------------------------------------------------
    def run(self):
        """Run the forward: (weighted loss, None), or (loss so far, layer index) where a layer
        running on its blobs changed its tops' shapes: every blob then holds its value, and
        the caller runs the layers after that one layer by layer."""
        net, env = self.net, self.env
        threads = thread_policy.for_forward(net._layers, net.bottom_vecs, net.top_vecs,
                                            probe=self.probe)
        started = time.perf_counter()
        done = len(self.ops)
        try:
            for slot, blob in self.inputs:
                try:
                    env[slot] = blob.data
                except OutOfMemoryError as e:     # named as the first layer reading it
                    raise at_layer(e, net._layers[self.reader[slot]]) from None
            try:
                for done, (fn, ins, outs) in enumerate(self.ops):
                    result = fn(*[env[k] for k in ins])
                    if len(outs) == 1:
                        env[outs[0]] = result
                    else:
                        for k, value in zip(outs, result):
                            env[k] = value
                else:
                    done = len(self.ops)
            except OutOfMemoryError as e:
                raise at_layer(e, net._layers[self.op_layer[done]]) from None
            except _Reshaped:
                fn, _, outs = self.ops[done]
                for k, blob in zip(outs, fn.top):
                    env[k] = blob.data
                self._hand_over(done)
                self.outdated = True
        finally:
            self.probe.record(threads.threads, time.perf_counter() - started)
            threads.close()
        if done == len(self.ops):
            self._hand_over()
        loss = torch.zeros((), dtype=net.dtype)
        for k, slot, w in self.loss_slots:
            if k <= done:
                loss = loss + w * env[slot].sum()
        return loss, (None if done == len(self.ops) else self.op_layer[done])

    def settle(self):
        """Every blob takes its pending value now."""
        for blob, _ in self.finals:
            blob._data.settle()

    def _hand_over(self, upto=None):
        """Give each blob its newest value (of ops 0..upto, or all)."""
        env = self.env
        if upto is None:
            finals = self.finals
        else:
            last = {}
            for writes in self.writes[:upto + 1]:
                for blob, slot in writes:
                    last[id(blob)] = (blob, slot)
            finals = list(last.values())
        # Values that are some blob's storage (inputs, layers that ran on their blobs) change
        # when that blob is written: a blob given one of them takes a copy at once.
        shared = {env[s].untyped_storage().data_ptr() for s in self.storage_slots
                  if env[s] is not None}
        for blob, slot in finals:
            value, mem = env[slot], blob._data
            if value is mem.view:
                mem.pending = None
                continue
            if blob.shape != tuple(value.shape):
                blob.reshape(value.shape)
            mem.pending = value
            if upto is not None or mem.has_live_array() or \
                    value.untyped_storage().data_ptr() in shared:
                mem.settle()


class PlainLayer:
    """A layer with no torch converter: it runs its own reshape and forward on its blobs,
    after its bottoms take their values."""

    def __init__(self, layer, bottom, top):
        self.layer, self.bottom, self.top = layer, bottom, top
        self.shapes = [t.shape for t in top]

    def __call__(self, *values):
        for blob, value in zip(self.bottom, values):
            mem = blob._data
            if value is mem.view:
                continue
            mem.pending = None
            if blob.shape != tuple(value.shape):
                blob.reshape(value.shape)
            blob.data.copy_(value)
        for blob in self.top:
            blob._data.pending = None       # about to be written: no stale value to take
        self.layer.reshape(self.bottom, self.top)
        self.layer.forward(self.bottom, self.top)
        if not self.bottom and [t.shape for t in self.top] != self.shapes:
            raise _Reshaped()
        out = tuple(t.data for t in self.top)
        return out[0] if len(out) == 1 else out


def _contiguous(fn):
    return lambda *xs: fn(*[x.contiguous() for x in xs])


# -- fusion -------------------------------------------------------------------------------
def _channels(blob):
    return blob.shape[1] if len(blob.shape) >= 2 else None


def _per_channel(blob, c):
    return blob.shape == (c,) or blob.count() == c and len(blob.shape) <= 1


def _affine_ok(layer, bottom, top, c):
    """Whether an in-chain layer is a per-channel affine map on axis 1 of `c` channels."""
    if len(bottom) != 1 or len(top) != 1:
        return False
    if layer.type == "BatchNorm":
        return layer.use_global_stats and len(layer.blobs) >= 3 and \
            _per_channel(layer.blobs[0], c)
    axis_param = layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param
    nd = len(bottom[0].shape)
    if axis_param.axis not in (1, 1 - nd) or not layer.blobs:
        return False
    return all(b.shape == (c,) for b in layer.blobs)


def _activation_ok(layer, c):
    if layer.type == "ReLU":
        return True
    if layer.type == "ReLU6":
        return layer.param.relu6_param.negative_slope == 0
    return layer.type == "PReLU" and layer.blobs[0].count() in (1, c)


def _chain_end(net, i):
    """The last layer of a fusable chain starting at layer i, or None: a Convolution (one
    2-D bottom and top) or a per-channel affine layer, then in-place affine layers on its top
    and at most one in-place activation, all consecutive."""
    layer, bottom, top = net._layers[i], net.bottom_vecs[i], net.top_vecs[i]
    if len(bottom) != 1 or len(top) != 1 or len(bottom[0].shape) < 2:
        return None
    c = _channels(top[0])
    if layer.type in CONVOLUTION_TYPES:
        if layer.axis != 1 or len(layer.geometry[0]) != 2 or not layer.native:
            return None
    elif layer.type in AFFINE_TYPES:
        if not _affine_ok(layer, bottom, top, c):
            return None
    else:
        return None
    blob, j = top[0], i
    while j + 1 < len(net._layers):
        nxt, b, t = net._layers[j + 1], net.bottom_vecs[j + 1], net.top_vecs[j + 1]
        if not (len(b) == 1 and len(t) == 1 and b[0] is blob and t[0] is blob):
            break
        if nxt.type in AFFINE_TYPES and _affine_ok(nxt, b, t, c):
            j += 1
            continue
        if nxt.type in ACTIVATION_TYPES and _activation_ok(nxt, c):
            j += 1
        break
    if layer.type not in CONVOLUTION_TYPES and j == i:
        return None      # a lone affine layer: its converter is as fast
    return j


def _fold(net, first, last, c):
    """(a, b, activation layer or None): the chain's affine layers as y = a x + b, float64."""
    a = torch.ones(c, dtype=torch.float64)
    b = torch.zeros(c, dtype=torch.float64)
    act = None
    for k in range(first, last + 1):
        layer = net._layers[k]
        if layer.type == "BatchNorm":
            f = float(layer.stats_factor().reshape(-1)[0])
            mean = layer.blobs[0].data.reshape(-1).double() * f
            var = layer.blobs[1].data.reshape(-1).double() * f
            r = 1.0 / torch.sqrt(var + layer.param.batch_norm_param.eps)
            a, b = a * r, (b - mean) * r
        elif layer.type == "Scale":
            g = layer.blobs[0].data.double()
            a, b = a * g, b * g
            if layer.has_bias:
                b = b + layer.blobs[1].data.double()
        elif layer.type == "Bias":
            b = b + layer.blobs[0].data.double()
        else:
            act = layer
    return a, b, act


def _fused_op(net, i, j):
    layer, top = net._layers[i], net.top_vecs[i][0]
    c = _channels(top)
    if layer.type in CONVOLUTION_TYPES:
        a, b, act = _fold(net, i + 1, j, c)
        return FusedConvolution(layer, net.bottom_vecs[i][0].shape, a, b, act, net.dtype)
    a, b, act = _fold(net, i, j, c)
    return FusedAffine(a, b, act, len(top.shape), net.dtype)


class _Activation:
    """The chain's activation, applied in place to a fresh tensor; oneDNN's post-op form."""

    def __init__(self, layer, dtype):
        self.slope, self.six, self.prelu = 0.0, False, None
        self.on = layer is not None
        if layer is None:
            self.attr, self.scalars = "none", []
        elif layer.type == "PReLU":
            w = layer.blobs[0].data.reshape(-1)
            self.prelu = w.to(dtype)
            self.attr, self.scalars = "none", []
        elif layer.type == "ReLU6":
            self.six = True
            self.attr, self.scalars = "hardtanh", [0.0, 6.0]
        else:
            self.slope = layer.param.relu_param.negative_slope
            self.attr, self.scalars = ("relu", []) if self.slope == 0 else \
                ("leaky_relu", [self.slope])

    def __call__(self, y):
        if self.prelu is not None:
            return torch.prelu(y, self.prelu)
        if self.six:
            return y.clamp_(0.0, 6.0)
        if self.slope:
            return torch.nn.functional.leaky_relu_(y, self.slope)
        return y.relu_()


class FusedConvolution:
    """Convolution with the chain's affine maps folded into W and b, its activation fused."""

    def __init__(self, layer, in_shape, a, b, act, dtype):
        self.layer, self.scale, self.dtype = layer, a, dtype
        bias = layer.blobs[1].data.double() if layer.bias_term else torch.zeros_like(a)
        self.bias = (bias * a + b).to(dtype)
        _, self.stride, self.pad, self.dilation = (list(g) for g in layer.geometry)
        self.group = layer.group
        self.act = _Activation(act, dtype)
        out = layer.out_view[2:]
        macs = layer.blobs[0].count() * out[0] * out[1]
        self.onednn = (dtype == torch.float32 and macs >= ONEDNN_MIN_MACS
                       and torch.backends.mkldnn.is_available())
        self.in_shape, self.post = list(in_shape), self.act.prelu is None
        # oneDNN picks the blocked layout of the weights for the threads it will run on: a
        # MobileNet packed for two threads took 53 ms a forward on one (5 ms on two), so
        # each thread count gets its own packing, made on first use. The folded weights
        # themselves are kept only where no packing is (ResNet-50: 100 MB less).
        self.packed, self.weight = {}, None
        if self.onednn:
            try:
                self._pack(torch.get_num_threads())
            except (RuntimeError, AttributeError):   # a build without oneDNN's fused ops
                self.onednn = False
        if not self.onednn:
            self.weight = self._folded()

    def _folded(self):
        """W scaled per output channel, in the net's dtype (the program is rebuilt when W
        changes, so the layer's blob still holds the weights it was built from)."""
        w = self.layer.blobs[0].data.double()
        return (w * self.scale.view(-1, 1, 1, 1)).to(self.dtype).contiguous()

    def _pack(self, threads):
        packed = self.packed[threads] = torch.ops.mkldnn._reorder_convolution_weight(
            self._folded(), self.pad, self.stride, self.dilation, self.group, self.in_shape)
        return packed

    def __call__(self, x):
        if self.onednn:
            threads = torch.get_num_threads()
            packed = self.packed.get(threads)
            try:
                if packed is None:
                    packed = self._pack(threads)
                y = torch.ops.mkldnn._convolution_pointwise(
                    x.contiguous(memory_format=torch.channels_last), packed, self.bias,
                    self.pad, self.stride, self.dilation, self.group,
                    self.act.attr if self.post else "none",
                    self.act.scalars if self.post else [], "")
                return y if self.post else self.act(y)
            except RuntimeError:
                self.onednn, self.weight = False, self._folded()
        y = torch.conv2d(x, self.weight, self.bias, self.stride, self.pad, self.dilation,
                         self.group)
        return self.act(y) if self.act.on else y


class FusedAffine:
    """A BatchNorm / Scale / Bias chain as y = a x + b over axis 1, then its activation."""

    def __init__(self, a, b, act, ndim, dtype):
        shape = (1, -1) + (1,) * (ndim - 2)
        self.a, self.b = a.to(dtype).view(shape), b.to(dtype).view(shape)
        self.act = _Activation(act, dtype)

    def __call__(self, x):
        y = torch.addcmul(self.b, x, self.a)
        return self.act(y) if self.act.on else y


# -- the exporter's converters, on live weights ---------------------------------------------
def _builder():
    from .export.graph import ExportError, Step, check_exportable
    from .export.torch_module import TORCH_CONVERTERS, TorchBuilder

    class Builder(TorchBuilder):
        """The torch exporter's builder: its ops read the learned blobs themselves (a weight
        write is seen without a rebuild), named b<k> / t<k> for bottoms and tops."""

        def param(self, blob, shape=None, transform=None):
            value = blob.data
            if shape is not None:
                value = value.reshape(shape)
            return value.t() if transform == "T" else value

        def ops_for(self, net, i):
            layer = net._layers[i]
            if layer.type not in TORCH_CONVERTERS:
                return None
            try:
                check_exportable(layer)
            except ExportError:
                return None
            bottoms = [f"b{k}" for k in range(len(net.bottom_vecs[i]))]
            tops = [f"t{k}" for k in range(len(net.top_vecs[i]))]
            self.ops = {}
            try:
                TORCH_CONVERTERS[layer.type](self, Step(layer, bottoms, tops, net.bottom_vecs[i],
                                                        net.top_vecs[i]))
            except ExportError:
                return None
            return list(self.ops.values())

    return Builder()
