"""The OCR forks' layers (CTPN, caffe_ocr): Transpose, Reverse, Lstm, CTCGreedyDecoder."""
import numpy as np
import pytest
import torch

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob


def run(layer, bottom):
    top = Blob((), torch.float64, bottom[0].device)
    layer.layer_setup(bottom, [top])
    layer.forward(bottom, [top])
    return top


def test_transpose(device):
    """senlinuc/caffe_ocr's Transpose: top axis i is bottom axis dim[i] (its own example:
    N x C x H x W to W x N x H x C)."""
    x = random_blob((2, 3, 4, 5), device=device)
    layer = make_layer('type: "Transpose" transpose_param { dim: 3 dim: 0 dim: 2 dim: 1 }',
                       device=device)
    top = run(layer, [x])
    assert tuple(top.shape) == (5, 2, 4, 3)
    for w, n, h, c in [(0, 0, 0, 0), (4, 1, 3, 2), (2, 1, 1, 0)]:
        assert top.data[w, n, h, c] == x.data[n, c, h, w]
    check_gradient(layer, [x])


def test_transpose_needs_every_axis():
    with pytest.raises(LayerSetupError, match="each of the 4"):
        run(make_layer('type: "Transpose" transpose_param { dim: 1 dim: 0 }'),
            [random_blob((2, 3, 4, 5))])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_reverse(device, axis):
    x = random_blob((3, 4, 2), device=device)
    layer = make_layer(f'type: "Reverse" reverse_param {{ axis: {axis} }}', device=device)
    top = run(layer, [x])
    n = x.shape[axis]
    for i in range(n):
        torch.testing.assert_close(top.data.select(axis, i), x.data.select(axis, n - 1 - i))
    check_gradient(layer, [x])


LSTM = ('type: "Lstm" lstm_param {{ num_output: 3 clipping_threshold: {clip} '
        'weight_filler {{ type: "gaussian" std: 0.5 }} '
        'bias_filler {{ type: "gaussian" std: 0.5 }} }}')


def test_lstm_forward_equals_torch_lstm(device):
    """The forks' gate order is (i, f, o, g); torch's nn.LSTM's is (i, f, g, o)."""
    x = random_blob((5, 2, 2, 2), device=device)
    layer = make_layer(LSTM.format(clip=0), device=device)
    top = run(layer, [x])
    assert tuple(top.shape) == (5, 2, 3)
    wx, wh, b = (blob.data for blob in layer.blobs)
    order = torch.cat([torch.arange(0, 6), torch.arange(9, 12), torch.arange(6, 9)]).to(device)
    ref = torch.nn.LSTM(4, 3).to(device=device, dtype=torch.float64)
    with torch.no_grad():
        ref.weight_ih_l0.copy_(wx[order])
        ref.weight_hh_l0.copy_(wh[order])
        ref.bias_ih_l0.copy_(b[order])
        ref.bias_hh_l0.zero_()
        expected, _ = ref(x.data.flatten(2))
    torch.testing.assert_close(top.data, expected)


def test_lstm_gradient(device):
    x = random_blob((4, 2, 3), device=device)
    check_gradient(make_layer(LSTM.format(clip=0), device=device), [x])


def test_lstm_clips_each_steps_gate_gradients(device):
    """The forks clamp every step's pre-activation gradients before they flow on (to h_{t-1},
    the weights and the input); the reference is autograd with that clamp as a hook."""
    x = random_blob((4, 2, 3), -2, 2, device=device)
    layer = make_layer(LSTM.format(clip=0.05), device=device)
    top = run(layer, [x])
    dy = torch.rand(top.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    top.diff.copy_(dy.to(device) * 4 - 2)
    for blob in layer.blobs:
        blob.diff.zero_()
    layer.backward([top], [True], [x])
    wx, wh, b = (blob.data.clone().requires_grad_() for blob in layer.blobs)
    xs = x.data.clone().requires_grad_()
    h = c = torch.zeros(2, 3, dtype=torch.float64, device=device)
    outs = []
    for t in range(4):
        z = xs[t] @ wx.T + b + h @ wh.T
        z.register_hook(lambda grad: grad.clamp(-0.05, 0.05))
        i, f, o = (torch.sigmoid(z[:, k * 3:(k + 1) * 3]) for k in range(3))
        c = f * c + i * torch.tanh(z[:, 9:])
        h = o * torch.tanh(c)
        outs.append(h)
    torch.stack(outs).backward(top.diff)
    torch.testing.assert_close(x.diff, xs.grad)
    for blob, ref in zip(layer.blobs, (wx, wh, b)):
        torch.testing.assert_close(blob.diff, ref.grad)


CTPN = """name: "ctpn-like"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 4 dim: 6 } } }
layer { name: "im2col" type: "Im2col" bottom: "data" top: "im2col"
        convolution_param { pad: 1 kernel_size: 3 } }
layer { name: "im2col_transpose" type: "Transpose" bottom: "im2col" top: "im2col_transpose"
        transpose_param { dim: 3 dim: 2 dim: 0 dim: 1 } }
layer { name: "lstm_input" type: "Reshape" bottom: "im2col_transpose" top: "lstm_input"
        reshape_param { shape { dim: -1 } axis: 1 num_axes: 2 } }
layer { name: "lstm" type: "Lstm" bottom: "lstm_input" top: "lstm"
        lstm_param { num_output: 5 clipping_threshold: 1
                     weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "lstm-reverse1" type: "Reverse" bottom: "lstm_input" top: "rlstm_input"
        reverse_param { axis: 0 } }
layer { name: "rlstm" type: "Lstm" bottom: "rlstm_input" top: "rlstm-output"
        lstm_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "lstm-reverse2" type: "Reverse" bottom: "rlstm-output" top: "rlstm"
        reverse_param { axis: 0 } }
layer { name: "merge_lstm_rlstm" type: "Concat" bottom: "lstm" bottom: "rlstm"
        top: "merge_lstm_rlstm" concat_param { axis: 2 } }
layer { name: "lstm_output_reshape" type: "Reshape" bottom: "merge_lstm_rlstm"
        top: "lstm_output_reshape" reshape_param { shape { dim: -1 dim: 1 } axis: 1 num_axes: 1 } }
layer { name: "lstm_output" type: "Transpose" bottom: "lstm_output_reshape" top: "lstm_output"
        transpose_param { dim: 2 dim: 3 dim: 1 dim: 0 } }
"""


def test_ctpn_style_bidirectional_lstm_net():
    """CTPN's deploy.prototxt pattern: Im2col, Transpose to W x H x C, an Lstm each way along
    the width (Reverse before and after), back to N x C x H x W."""
    import caffe
    from caffe.formats import parse_text
    from caffe.proto import caffe_pb2
    net = caffe.Net(parse_text(CTPN, caffe_pb2.NetParameter()), caffe.TEST)
    assert net.blobs["lstm_input"].data.shape == (6, 4, 27)
    assert net.blobs["lstm_output"].data.shape == (1, 10, 4, 6)
    net.blobs["data"].data[...] = np.random.RandomState(0).uniform(-1, 1, (1, 3, 4, 6))
    out = net.forward()["lstm_output"]
    forward, backward = net.blobs["lstm"].data, net.blobs["rlstm-output"].data
    for h in range(4):
        for w in range(6):
            np.testing.assert_allclose(out[0, :5, h, w], forward[w, h])
            # the backward Lstm read the widths in reverse: its step 5 - w is width w
            np.testing.assert_allclose(out[0, 5:, h, w], backward[5 - w, h])
    np.testing.assert_allclose(net.blobs["rlstm_input"].data, net.blobs["lstm_input"].data[::-1])


def test_ctc_greedy_decoder_sequences(device):
    """caffe_ocr's Decode, step by step: best class per step, repeats merged, blank 0 out."""
    best = [[1, 1, 0, 1, 2, 2], [0, 0, 0, 0, 0, 0], [3, 0, 3, 3, 0, 2]]   # N x T
    scores = torch.full((6, 3, 4), -1.0, dtype=torch.float64)
    for n, row in enumerate(best):
        for t, c in enumerate(row):
            scores[t, n, c] = 2.0
    x = random_blob((6, 3, 4), values=scores.numpy(), device=device)
    top = run(make_layer('type: "CTCGreedyDecoder"', device=device), [x])
    expected = -torch.ones(3, 6, 1, 1, dtype=torch.float64)
    for n, seq in enumerate([[1, 1, 2], [], [3, 3, 2]]):
        expected[n, :len(seq), 0, 0] = torch.tensor(seq, dtype=torch.float64)
    torch.testing.assert_close(top.data.cpu(), expected)
    unmerged = run(make_layer('type: "CTCGreedyDecoder" ctc_decoder_param { '
                              'ctc_merge_repeated: false blank_index: -1 }', device=device), [x])
    assert unmerged.data[0, :, 0, 0].tolist() == [1, 1, 0, 1, 2, 2]    # blank is class 3 now


def test_ctc_greedy_decoder_accuracy(device):
    best = [[1, 2, 2, 0, 3], [2, 0, 2, 0, 0], [0, 0, 0, 0, 0]]
    scores = torch.zeros((5, 3, 4), dtype=torch.float64)
    for n, row in enumerate(best):
        for t, c in enumerate(row):
            scores[t, n, c] = 1.0
    labels = torch.tensor([[1, 2, 3, -1], [2, 1, -1, -1], [0, -1, 5, 5]], dtype=torch.float64)
    top = run(make_layer('type: "CTCGreedyDecoder"', device=device),
              [random_blob((5, 3, 4), values=scores.numpy(), device=device),
               random_blob((3, 4), values=labels.numpy(), device=device)])
    # decoded [1, 2, 3] exact; [2, 2] vs [2, 1]: 1 edit of 2; [] vs [] (blank dropped): skipped
    assert top.data.flatten().tolist() == pytest.approx([1 - (0 + 0.5) / 3, 1 / 3])
