"""Recurrent layers: the LSTM cell, and RNN / LSTM unrolled over time into an inner Net.

Sequences are laid out time-major: x is T x N x ..., and cont (T x N) is 0 where a
stream starts a new sequence (the hidden state is flushed) and 1 where it continues.
"""
import logging

import torch

from ..layer import Layer, register_layer
from ..log_text import printable
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def lstm_unit(c_prev, x, cont):
    """LSTMUnit's maths for one step: from c_prev (N, D), the gate inputs x (N, 4D) in the
    order i, f, o, g and cont (N,), the cell c, the output h = o tanh(c) and the activations
    i, f, o, g stacked (N, 4, D). The layer and the torch exporter use it."""
    gates = x.view(x.shape[0], 4, -1)
    i, f, o = torch.sigmoid(gates[:, :3]).unbind(1)
    # Caffe forces the forget gate to exactly 0 where cont is 0 (a new sequence).
    cont = cont[:, None]
    f = torch.where(cont == 0, torch.zeros_like(f), cont * f)
    g = torch.tanh(gates[:, 3])
    c = f * c_prev + i * g
    return c, o * torch.tanh(c), torch.stack([i, f, o, g], 1)


@register_layer
class LSTMUnitLayer(Layer):
    """[i f o g] = [sig sig sig tanh](x); f *= cont; c = f * c_prev + i * g; h = o * tanh(c).

    Bottoms c_prev (1 x N x D), x (1 x N x 4D, gates in the order i, f, o, g), cont (1 x N);
    tops c and h (1 x N x D). The sequence indicator cont has no gradient.
    """

    type = "LSTMUnit"
    exact_num_bottom_blobs = 3
    exact_num_top_blobs = 2

    def reshape(self, bottom, top):
        c_prev, x, cont = bottom
        n = c_prev.shape_at(1) if c_prev.num_axes == 3 else -1
        if c_prev.num_axes != 3 or c_prev.shape[0] != 1:
            self.fail(f"bottom[0] (c_prev) must be 1 x N x D, got {c_prev.shape}")
        self.dim = c_prev.shape[2]
        if x.shape != (1, n, 4 * self.dim):
            self.fail(f"bottom[1] (gate inputs) must be 1 x {n} x {4 * self.dim}, got {x.shape}")
        if cont.shape != (1, n):
            self.fail(f"bottom[2] (cont) must be 1 x {n}, got {cont.shape}")
        top[0].reshape_like(c_prev)
        top[1].reshape_like(c_prev)

    def forward(self, bottom, top):
        c, h, self.acts = lstm_unit(bottom[0].data[0], bottom[1].data[0], bottom[2].data[0])
        top[0].data[0] = c
        top[1].data[0] = h

    def backward(self, top, propagate_down, bottom):
        i, f, o, g = self.acts.unbind(1)
        dc, dh = top[0].diff[0], top[1].diff[0]
        tanh_c = torch.tanh(top[0].data[0])
        dc_total = dc + dh * o * (1 - tanh_c * tanh_c)
        if propagate_down[1]:
            # d/d(pre-activation), through the stored activations; as in Caffe the
            # forget gate's derivative uses f as stored (already scaled by cont).
            d_acts = torch.stack([dc_total * g, dc_total * bottom[0].data[0], dh * tanh_c,
                                  dc_total * i], 1)
            sig = self.acts[:, :3]
            d_acts[:, :3] *= sig * (1 - sig)
            d_acts[:, 3] *= 1 - g * g
            bottom[1].diff[0] = d_acts.view(bottom[1].shape[1:])
        if propagate_down[0]:
            bottom[0].diff[0] = dc_total * f

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2      # cont is an indicator, not a differentiable input


class RecurrentLayer(Layer):
    """Base of RNN and LSTM: the recurrence unrolled over the T time steps of x into an
    inner Net (built from a NetParameter by the subclass's fill_unrolled_net).

    Bottoms x (T x N x ...), cont (T x N), optionally x_static (N x ...) seen at every
    step, and with expose_hidden the initial hidden state(s); tops the output sequence
    and, with expose_hidden, the final hidden state(s). Without expose_hidden the final
    state of one forward is the initial state of the next (cont = 0 flushes it).
    As in Caffe, no gradient flows into cont or the exposed initial state, nor from the
    exposed final state: the recurrence is truncated at the batch boundary.
    """

    output_name = ""            # the inner net's blob that becomes top[0]

    # -- what a subclass defines: state blob names and the unrolled net --------------------
    def recurrent_input_names(self):
        raise NotImplementedError

    def recurrent_output_names(self):
        raise NotImplementedError

    def fill_unrolled_net(self, net_param):
        raise NotImplementedError

    def __init__(self, param, dtype=torch.float32, device="cpu"):
        super().__init__(param, dtype, device)
        hidden = len(self.recurrent_input_names()) if param.recurrent_param.expose_hidden else 0
        self.min_bottom_blobs, self.max_bottom_blobs = 2 + hidden, 3 + hidden
        self.exact_num_top_blobs = 1 + hidden

    def setup(self, bottom, top):
        from ..net import Net
        p = self.param.recurrent_param
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2:
            self.fail(f"bottom[0] must have at least 2 axes (T x N x ...), got {x.shape}")
        self.T, self.N = x.shape[:2]
        if cont.shape != (self.T, self.N):
            self.fail(f"bottom[1] (cont) must be T x N = {self.T} x {self.N}, got {cont.shape}")
        if p.num_output <= 0:
            self.fail("recurrent_param.num_output must be positive")
        if 4 * p.num_output >= 2 ** 31:
            # The unrolled net's InnerProduct for the (up to 4) gates must fit Caffe's uint32.
            self.fail(f"recurrent_param.num_output {p.num_output} is too large")
        self.num_output = p.num_output
        self.expose_hidden = p.expose_hidden
        num_hidden = len(self.recurrent_input_names()) if self.expose_hidden else 0
        self.static_input = len(bottom) > 2 + num_hidden
        if self.static_input and (bottom[2].num_axes < 1 or bottom[2].shape[0] != self.N):
            self.fail(f"bottom[2] (x_static) must be N x ... with N = {self.N}, "
                      f"got {bottom[2].shape}")

        net_param = caffe_pb2.NetParameter()
        net_param.state.phase = self.phase
        inputs = net_param.layer.add(name="input", type="Input")
        for name, blob in zip(("x", "cont", "x_static"), bottom[:2 + self.static_input]):
            inputs.top.append(name)
            inputs.input_param.shape.add().dim.extend(blob.shape)
        self.fill_unrolled_net(net_param)
        if self.name:
            for layer in net_param.layer:
                layer.name = f"{self.name}_{layer.name}"
        # Pseudo-losses make the inner net backpropagate from the output without
        # force_backward (which would also reach cont); they are never run.
        layer = net_param.layer.add(name=self.output_name + "_pseudoloss", type="Reduction")
        layer.bottom.append(self.output_name)
        layer.top.append(self.output_name + "_pseudoloss")
        layer.loss_weight.append(1)
        self.net = net = Net(net_param, dtype=self.dtype, device=self.device)
        self.last_layer = len(net._layers) - 2

        def blob(name):
            return net._blobs[net.blob_index[name]]
        self.x_input, self.cont_input = blob("x"), blob("cont")
        self.static_input_blob = blob("x_static") if self.static_input else None
        self.recur_inputs = [blob(n) for n in self.recurrent_input_names()]
        self.recur_outputs = [blob(n) for n in self.recurrent_output_names()]
        self.output = blob(self.output_name)

        # This layer's learned blobs are the inner net's unshared ones, so the shared
        # copies at every time step accumulate their gradients into them.
        params = [b for b, owner in zip(net._params, net.param_owners) if owner < 0]
        if self.blobs:          # given in the LayerParameter: keep their values
            if [b.shape for b in self.blobs] != [b.shape for b in params]:
                self.fail(f"learned blobs {[b.shape for b in self.blobs]} do not fit the "
                          f"unrolled net's {[b.shape for b in params]}")
            for mine, given in zip(params, self.blobs):
                mine.data.copy_(given.data)
        self.blobs = params
        self.param_propagate_down = [True] * len(params)

    def reshape(self, bottom, top):
        x, cont = bottom[0], bottom[1]
        if x.num_axes < 2 or x.shape[0] != self.T:
            self.fail(f"the number of time steps changed: the net was unrolled for "
                      f"T = {self.T}, bottom[0] is {x.shape}")
        self.N = n = x.shape[1]
        if cont.shape != (self.T, n):
            self.fail(f"bottom[1] (cont) must be T x N = {self.T} x {n}, got {cont.shape}")
        self.x_input.reshape_like(x)
        self.cont_input.reshape_like(cont)
        if self.static_input:
            self.static_input_blob.reshape_like(bottom[2])
        state_shape = (1, n, self.num_output)
        for blob in self.recur_inputs:
            blob.reshape(state_shape)
        for i, blob in enumerate(self.hidden_bottoms(bottom)):
            if blob.shape != state_shape:
                self.fail(f"bottom[{2 + self.static_input + i}] (initial hidden state) must "
                          f"be {state_shape}, got {blob.shape}")
        top[0].reshape(self.T, n, self.num_output)
        for blob in top[1:]:
            blob.reshape(state_shape)

    def hidden_bottoms(self, bottom):
        return bottom[2 + self.static_input:] if self.expose_hidden else []

    def forward(self, bottom, top):
        # The outer net may have re-pointed our blobs (ShareTrainedLayersWith); the
        # time steps' copies must follow.
        self.net._share_weights()
        self.x_input.data.copy_(bottom[0].data)
        self.cont_input.data.copy_(bottom[1].data)
        if self.static_input:
            self.static_input_blob.data.copy_(bottom[2].data)
        if self.expose_hidden:
            sources = self.hidden_bottoms(bottom)
        else:
            sources = self.recur_outputs      # carry the state over from the last batch
        for blob, source in zip(self.recur_inputs, sources):
            if source.shape == blob.shape:
                blob.data.copy_(source.data)
            else:                              # batch size changed: start afresh
                blob.data.zero_()
        if self.param.recurrent_param.debug_info:
            self._forward_debug()
        else:
            self.net.forward_from_to(0, self.last_layer)
        top[0].data.copy_(self.output.data)
        for blob, state in zip(top[1:], self.recur_outputs):
            blob.data.copy_(state.data)

    def backward(self, top, propagate_down, bottom):
        # Only the output sequence's diff enters: the final state's (LSTM's c_T) is
        # never written, so the recurrence is truncated at the batch boundary.
        self.output.diff.copy_(top[0].diff)
        if self.param.recurrent_param.debug_info:
            self._backward_debug()
        else:
            self.net.backward_from_to(self.last_layer, 0)
        if propagate_down[0]:
            bottom[0].diff.copy_(self.x_input.diff)
        if self.static_input and propagate_down[2]:
            bottom[2].diff.copy_(self.static_input_blob.diff)
        # cont and the exposed initial state get no gradient (Caffe leaves them untouched).
        for i, blob in enumerate(bottom):
            if propagate_down[i] and (i == 1 or i >= 2 + self.static_input):
                blob.diff.zero_()

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    # -- recurrent_param.debug_info: Caffe's per-layer mean |value| log ------------------
    def _forward_debug(self):
        net = self.net
        for i in range(self.last_layer + 1):
            net.forward_from_to(i, i)
            for bid in net.top_ids[i]:
                log.info("    [Forward] Layer %s, top blob %s data: %g",
                         printable(net._layer_names[i]), printable(net._blob_names[bid]),
                         _mean_abs(net._blobs[bid].data))
            for j, blob in enumerate(net._layers[i].blobs):
                log.info("    [Forward] Layer %s, param blob %d data: %g",
                         printable(net._layer_names[i]), j, _mean_abs(blob.data))

    def _backward_debug(self):
        net = self.net
        for i in range(self.last_layer, -1, -1):
            if not net.layer_need_backward[i]:
                continue
            net.backward_from_to(i, i)
            for bid, need in zip(net.bottom_ids[i], net.bottom_need_backward[i]):
                if need:
                    log.info("    [Backward] Layer %s, bottom blob %s diff: %g",
                             printable(net._layer_names[i]), printable(net._blob_names[bid]),
                             _mean_abs(net._blobs[bid].diff))
            for j, blob in enumerate(net._layers[i].blobs):
                log.info("    [Backward] Layer %s, param blob %d diff: %g",
                         printable(net._layer_names[i]), j, _mean_abs(blob.diff))


def _mean_abs(tensor):
    return float(tensor.abs().mean()) if tensor.numel() else 0.0


def _add_layer(net_param, name, type_, bottom=(), top=(), params=(), **settings):
    layer = net_param.layer.add(name=name, type=type_)
    layer.bottom.extend(bottom)
    layer.top.extend(top)
    for p in params:
        layer.param.add(name=p)
    for field, value in settings.items():
        getattr(layer, field).CopyFrom(value)
    return layer


def _inner_product(p, num_output, axis, bias):
    ip = caffe_pb2.InnerProductParameter(num_output=num_output, bias_term=bias, axis=axis)
    ip.weight_filler.CopyFrom(p.weight_filler)
    if bias:
        ip.bias_filler.CopyFrom(p.bias_filler)
    return ip


def _input_transforms(layer, net_param, gates):
    """x_transform (W * x + b over all steps), the optional static term, and the per-step
    slices; shared by RNN and LSTM, which differ only in the width `gates` * H."""
    p, width = layer.param.recurrent_param, gates * layer.num_output
    add = _add_layer
    add(net_param, "cont_slice", "Slice", ["cont"],
        [f"cont_{t}" for t in range(1, layer.T + 1)],
        slice_param=caffe_pb2.SliceParameter(axis=0))
    w, b = {1: ("W_xh", "b_h"), 4: ("W_xc", "b_c")}[gates]
    add(net_param, "x_transform", "InnerProduct", ["x"], [f"{w}_x"], [w, b],
        inner_product_param=_inner_product(p, width, 2, True)).propagate_down.append(True)
    if layer.static_input:
        add(net_param, f"{w}_x_static", "InnerProduct", ["x_static"],
            [f"{w}_x_static_preshape"], [f"{w}_static"],
            inner_product_param=_inner_product(p, width, 1, False)).propagate_down.append(True)
        shape = caffe_pb2.BlobShape(dim=[1, -1, width])
        add(net_param, f"{w}_x_static_reshape", "Reshape", [f"{w}_x_static_preshape"],
            [f"{w}_x_static"], reshape_param=caffe_pb2.ReshapeParameter(shape=shape))
    add(net_param, f"{w}_x_slice", "Slice", [f"{w}_x"],
        [f"{w}_x_{t}" for t in range(1, layer.T + 1)],
        slice_param=caffe_pb2.SliceParameter(axis=0))


def _state_input(net_param, names, n, num_output):
    layer = net_param.layer.add(name="state_input", type="Input")
    for name in names:
        layer.top.append(name)
        layer.input_param.shape.add().dim.extend([1, n, num_output])


@register_layer
class RNNLayer(RecurrentLayer):
    """h_t = tanh(W_hh (cont_t h_{t-1}) + W_xh x_t + b_h [+ W_xh_static x_static]);
    o_t = tanh(W_ho h_t + b_o). Learned blobs W_xh, b_h, [W_xh_static,] W_hh, W_ho, b_o."""

    type = "RNN"
    output_name = "o"

    def recurrent_input_names(self):
        return ["h_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}"]

    def fill_unrolled_net(self, net_param):
        p, add = self.param.recurrent_param, _add_layer
        _state_input(net_param, ["h_0"], self.N, self.num_output)
        _input_transforms(self, net_param, 1)
        static = ["W_xh_x_static"] if self.static_input else []
        scale = caffe_pb2.ScaleParameter(axis=0)
        for t in range(1, self.T + 1):
            prev = t - 1
            add(net_param, f"h_conted_{prev}", "Scale", [f"h_{prev}", f"cont_{t}"],
                [f"h_conted_{prev}"], scale_param=scale)
            add(net_param, f"W_hh_h_{prev}", "InnerProduct", [f"h_conted_{prev}"],
                [f"W_hh_h_{prev}"], ["W_hh"],
                inner_product_param=_inner_product(p, self.num_output, 2, False))
            add(net_param, f"h_input_sum_{t}", "Eltwise", [f"W_hh_h_{prev}", f"W_xh_x_{t}"]
                + static, [f"h_neuron_input_{t}"], eltwise_param=_SUM)
            add(net_param, f"h_neuron_{t}", "TanH", [f"h_neuron_input_{t}"], [f"h_{t}"])
            add(net_param, f"W_ho_h_{t}", "InnerProduct", [f"h_{t}"], [f"W_ho_h_{t}"],
                ["W_ho", "b_o"], inner_product_param=_inner_product(p, self.num_output, 2, True))
            add(net_param, f"o_neuron_{t}", "TanH", [f"W_ho_h_{t}"], [f"o_{t}"])
        add(net_param, "o_concat", "Concat", [f"o_{t}" for t in range(1, self.T + 1)], ["o"],
            concat_param=caffe_pb2.ConcatParameter(axis=0))


@register_layer
class LSTMLayer(RecurrentLayer):
    """gates_t = W_hc (cont_t h_{t-1}) + W_xc x_t + b_c [+ W_xc_static x_static], then
    (c_t, h_t) = LSTMUnit(c_{t-1}, gates_t, cont_t). Learned blobs W_xc, b_c,
    [W_xc_static,] W_hc; gates ordered i, f, o, g."""

    type = "LSTM"
    output_name = "h"

    def recurrent_input_names(self):
        return ["h_0", "c_0"]

    def recurrent_output_names(self):
        return [f"h_{self.T}", "c_T"]

    def fill_unrolled_net(self, net_param):
        p, add = self.param.recurrent_param, _add_layer
        _state_input(net_param, ["c_0", "h_0"], self.N, self.num_output)
        _input_transforms(self, net_param, 4)
        static = ["W_xc_x_static"] if self.static_input else []
        scale = caffe_pb2.ScaleParameter(axis=0)
        for t in range(1, self.T + 1):
            prev = t - 1
            add(net_param, f"h_conted_{prev}", "Scale", [f"h_{prev}", f"cont_{t}"],
                [f"h_conted_{prev}"], scale_param=scale)
            add(net_param, f"transform_{t}", "InnerProduct", [f"h_conted_{prev}"],
                [f"W_hc_h_{prev}"], ["W_hc"],
                inner_product_param=_inner_product(p, 4 * self.num_output, 2, False))
            add(net_param, f"gate_input_{t}", "Eltwise", [f"W_hc_h_{prev}", f"W_xc_x_{t}"]
                + static, [f"gate_input_{t}"], eltwise_param=_SUM)
            add(net_param, f"unit_{t}", "LSTMUnit", [f"c_{prev}", f"gate_input_{t}", f"cont_{t}"],
                [f"c_{t}", f"h_{t}"])
        add(net_param, "c_T_copy", "Split", [f"c_{self.T}"], ["c_T"])
        add(net_param, "h_concat", "Concat", [f"h_{t}" for t in range(1, self.T + 1)], ["h"],
            concat_param=caffe_pb2.ConcatParameter(axis=0))


_SUM = caffe_pb2.EltwiseParameter(operation=caffe_pb2.EltwiseParameter.SUM)
