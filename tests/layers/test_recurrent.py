"""Recurrent layers: LSTMUnit, and RNN / LSTM unrolled into an inner net."""
import logging

import numpy as np
import pytest
import torch

import caffe
from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob

T, N, D, H, S = 3, 2, 3, 2, 2   # S: width of the static input
# cont: every stream starts a sequence at t = 0 (so no state leaks between the checker's
# forwards) and stream 1 starts another at t = 1.
CONT = [[0, 0], [1, 0], [1, 1]]


def recurrent(kind, expose=False, num_output=H, device="cpu", name="rec"):
    text = f"""name: "{name}" type: "{kind}" recurrent_param {{ num_output: {num_output}
        expose_hidden: {str(expose).lower()}
        weight_filler {{ type: "uniform" min: -0.6 max: 0.6 }}
        bias_filler {{ type: "uniform" min: -0.3 max: 0.3 }} }}"""
    return make_layer(text, device=device)


def blob(shape, seed, device="cpu", values=None, low=-1.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return random_blob(shape, low, high, device=device, generator=g, values=values)


def sequence_bottoms(device, static=False, cont=CONT):
    bottom = [blob((T, N, D), 1, device), blob((T, N), 0, device, values=cont)]
    if static:
        bottom.append(blob((N, S), 2, device))
    return bottom


def assert_close(actual, expected):
    # np.testing: torch.testing's first call costs a second of lazy imports
    np.testing.assert_allclose(actual.cpu().numpy(), expected.cpu().numpy(), rtol=1e-7, atol=1e-10)


def tops(n):
    return [Blob((), torch.float64) for _ in range(n)]


def run(layer, bottom, n_tops=1):
    top = tops(n_tops)
    layer.layer_setup(bottom, top)
    layer.forward(bottom, top)
    return top


# -- LSTMUnit --------------------------------------------------------------------------
def lstm_unit_bottoms(device, cont=(1, 0, 1)):
    return [blob((1, 3, 4), 3, device), blob((1, 3, 16), 4, device, low=-2, high=2),
            blob((1, 3), 0, device, values=[cont])]


def test_lstm_unit_gradient(device):
    layer = make_layer('type: "LSTMUnit"', device=device)
    check_gradient(layer, lstm_unit_bottoms(device), check_bottom=[0, 1])


def test_lstm_unit_forward_formula():
    layer = make_layer('type: "LSTMUnit"')
    bottom = lstm_unit_bottoms("cpu", cont=(1, 0, 0.5))
    c, h = run(layer, bottom, 2)
    c_prev, x, cont = bottom[0].data[0], bottom[1].data[0].view(3, 4, 4), bottom[2].data[0]
    i, f, g = x.sigmoid()[:, 0], x.sigmoid()[:, 1], x[:, 3].tanh()
    expected_c = cont[:, None] * f * c_prev + i * g
    assert_close(c.data[0], expected_c)
    assert_close(h.data[0], x.sigmoid()[:, 2] * expected_c.tanh())
    assert layer.allow_force_backward(1) and not layer.allow_force_backward(2)


def test_lstm_unit_rejects_bad_shapes():
    layer = make_layer('type: "LSTMUnit"')
    bottom = [blob((1, 3, 4), 0), blob((1, 3, 15), 0), blob((1, 3), 0)]
    with pytest.raises(LayerSetupError, match="gate inputs"):
        run(layer, bottom, 2)


# -- RNN and LSTM: gradients ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_gradient(device, kind, static):
    layer = recurrent(kind, device=device)
    bottom = sequence_bottoms(device, static)
    check_gradient(layer, bottom, check_bottom=[0, 2] if static else [0])


@pytest.mark.parametrize("kind, n_state", [("RNN", 1), ("LSTM", 2)])
@pytest.mark.parametrize("static", [False, True])
def test_recurrent_expose_hidden_gradient(device, kind, n_state, static):
    layer = recurrent(kind, expose=True, device=device)
    bottom = sequence_bottoms(device, static, cont=[[1, 0], [1, 1], [0, 1]])
    bottom += [blob((1, N, H), 10 + k, device) for k in range(n_state)]
    top = tops(1 + n_state)
    layer.layer_setup(bottom, top)
    # As in Caffe the exposed final state carries no gradient back into the sequence,
    # so the objective is taken over the output sequence alone.
    check_gradient(layer, bottom, check_bottom=[0, 2] if static else [0], top=top[:1])
    layer.backward(top, [True] * len(bottom), bottom)
    for state in bottom[2 + static:]:
        assert not state.diff.any()      # nor into the exposed initial state


# -- RNN and LSTM: semantics ---------------------------------------------------------------
def test_lstm_matches_torch():
    layer = recurrent("LSTM", num_output=4)
    bottom = sequence_bottoms("cpu", cont=[[0, 0], [1, 1], [1, 1]])
    (out,) = run(layer, bottom)
    w_xc, b_c, w_hc = (b.data for b in layer.blobs)
    ref = torch.nn.LSTM(D, 4, dtype=torch.float64)
    order = torch.cat([torch.arange(0, 8), torch.arange(12, 16), torch.arange(8, 12)])
    with torch.no_grad():   # torch orders the gates i, f, g, o; Caffe i, f, o, g
        ref.weight_ih_l0.copy_(w_xc[order])
        ref.weight_hh_l0.copy_(w_hc[order])
        ref.bias_ih_l0.copy_(b_c[order])
        ref.bias_hh_l0.zero_()
        expected, _ = ref(bottom[0].data)
    assert_close(out.data, expected)


def test_rnn_matches_loop():
    layer = recurrent("RNN")
    bottom = sequence_bottoms("cpu", static=True)
    (out,) = run(layer, bottom)
    w_xh, b_h, w_static, w_hh, w_ho, b_o = (b.data for b in layer.blobs)
    x, cont, xs = (b.data for b in bottom)
    h = torch.zeros(N, H, dtype=torch.float64)
    for t in range(T):
        h = torch.tanh(cont[t, :, None] * h @ w_hh.T + x[t] @ w_xh.T + b_h + xs @ w_static.T)
        assert_close(out.data[t], torch.tanh(h @ w_ho.T + b_o))


@pytest.mark.parametrize("kind, shapes", [
    ("RNN", [(H, D), (H,), (H, S), (H, H), (H, H), (H,)]),
    ("LSTM", [(4 * H, D), (4 * H,), (4 * H, S), (4 * H, H)])])
def test_learned_blobs_in_caffe_order(kind, shapes):
    layer = recurrent(kind)
    run(layer, sequence_bottoms("cpu", static=True))
    assert [b.shape for b in layer.blobs] == shapes
    assert layer.param_propagate_down == [True] * len(shapes)


@pytest.mark.parametrize("kind", ["RNN", "LSTM"])
def test_state_carries_over_between_batches(kind):
    """Two forwards of T steps with cont = 1 equal one forward of 2T steps."""
    x = blob((2 * T, N, D), 5)
    whole = recurrent(kind)
    cont = [[0, 0]] + [[1, 1]] * (2 * T - 1)
    (expected,) = run(whole, [x, blob((2 * T, N), 0, values=cont)])
    halves = recurrent(kind)
    first = [blob((T, N, D), 0, values=x.data[:T]), blob((T, N), 0, values=cont[:T])]
    top = run(halves, first)
    for mine, theirs in zip(halves.blobs, whole.blobs):
        mine.data.copy_(theirs.data)
    halves.forward(first, top)
    assert_close(top[0].data, expected.data[:T])
    second = [blob((T, N, D), 0, values=x.data[T:]), blob((T, N), 0, values=cont[T:])]
    halves.forward(second, top)
    assert_close(top[0].data, expected.data[T:])
    # cont = 0 at the first step flushes the carried state
    halves.forward(first, top)
    assert_close(top[0].data, expected.data[:T])


@pytest.mark.parametrize("kind, n_state", [("RNN", 1), ("LSTM", 2)])
def test_exposed_state_continues_a_sequence(kind, n_state):
    x = blob((2 * T, N, D), 5)
    cont = [[1, 1]] * (2 * T)
    whole = recurrent(kind, expose=True)
    zeros = [blob((1, N, H), 0, values=np.zeros((1, N, H))) for _ in range(n_state)]
    expected = run(whole, [x, blob((2 * T, N), 0, values=cont)] + zeros, 1 + n_state)
    part = recurrent(kind, expose=True)
    first = [blob((T, N, D), 0, values=x.data[:T]), blob((T, N), 0, values=cont[:T])]
    top = run(part, first + zeros, 1 + n_state)
    for mine, theirs in zip(part.blobs, whole.blobs):
        mine.data.copy_(theirs.data)
    part.forward(first + zeros, top)
    state = [blob((1, N, H), 0, values=t.data) for t in top[1:]]
    second = [blob((T, N, D), 0, values=x.data[T:]), blob((T, N), 0, values=cont[T:])]
    part.forward(second + state, top)
    assert_close(top[0].data, expected[0].data[T:])
    for mine, theirs in zip(top[1:], expected[1:]):
        assert_close(mine.data, theirs.data)


def test_batch_size_may_change_but_not_time_steps():
    layer = recurrent("LSTM")
    top = run(layer, sequence_bottoms("cpu"))
    bottom = [blob((T, 5, D), 1), blob((T, 5), 0, values=np.zeros((T, 5)))]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    assert top[0].shape == (T, 5, H)
    with pytest.raises(LayerSetupError, match="time steps changed"):
        layer.reshape([blob((T + 1, 5, D), 1), blob((T + 1, 5), 0)], top)


def test_num_output_required():
    layer = make_layer('type: "RNN" recurrent_param { }')
    with pytest.raises(LayerSetupError, match="num_output"):
        run(layer, sequence_bottoms("cpu"))


NET = """name: "seq" force_backward: true
layer {{ name: "x" type: "Input" top: "x"
        input_param {{ shape {{ dim: {T} dim: {N} dim: {D} }} }} }}
layer {{ name: "cont" type: "Input" top: "cont" input_param {{ shape {{ dim: {T} dim: {N} }} }} }}
layer {{ name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
        recurrent_param {{ num_output: {H} weight_filler {{ type: "gaussian" std: 0.5 }} }} }}
""".format(T=T, N=N, D=D, H=H)


def test_net_weights_round_trip_and_sharing(tmp_path):
    path = tmp_path / "seq.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TRAIN)
    x, cont = np.random.RandomState(0).randn(T, N, D), np.array(CONT)
    out = net.forward(x=x, cont=cont)["h"].copy()
    weights = str(tmp_path / "seq.caffemodel")
    net.save(weights)
    test_net = caffe.Net(str(path), weights, caffe.TEST)
    np.testing.assert_allclose(test_net.forward(x=x, cont=cont)["h"], out, rtol=1e-6)
    # A test net sharing the train net's weights (as the solver does) follows updates.
    other = caffe.Net(str(path), caffe.TEST)
    other.share_with(net)
    net.params["lstm"][2].data[...] *= 0.5          # W_hc, used at every time step
    expected = net.forward(x=x, cont=cont)["h"].copy()
    np.testing.assert_allclose(other.forward(x=x, cont=cont)["h"], expected, rtol=1e-6)
    assert not np.allclose(expected, out)


def test_debug_info_logs_inner_layers(caplog):
    layer = make_layer('name: "r" type: "RNN" recurrent_param { num_output: 2 debug_info: true '
                       'weight_filler { type: "gaussian" std: 0.5 } }')
    bottom = sequence_bottoms("cpu")
    with caplog.at_level(logging.INFO, logger="caffe"):
        top = run(layer, bottom)
        top[0].diff.fill_(1)
        layer.backward(top, [True, False], bottom)
    assert "[Forward] Layer r_h_neuron_1, top blob h_1 data" in caplog.text
    assert "[Backward] Layer r_x_transform, param blob 0 diff" in caplog.text
