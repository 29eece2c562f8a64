"""The OCR forks' layers: tianzhi0549/CTPN's and senlinuc/caffe_ocr's Transpose, Reverse and
Lstm (Junhyuk Oh's), and caffe_ocr's CTCGreedyDecoder; its DenseBlock is in dense_block.py."""
import torch

from ..layer import Layer, register_layer
from .common_layers import PermuteLayer


@register_layer
class TransposeLayer(PermuteLayer):
    """top = bottom.permute(transpose_param.dim): top axis i is bottom axis dim[i], every axis
    named (senlinuc/caffe_ocr's Transpose). Not in place."""

    type = "Transpose"

    def setup(self, bottom, top):
        n, dims = bottom[0].num_axes, list(self.param.transpose_param.dim)
        if top[0] is bottom[0]:
            self.fail("does not allow in-place computation")
        if sorted(dims) != list(range(n)):
            self.fail(f"dim {dims} must name each of the {n} bottom axes once")
        self.order, self.identity = dims, False


@register_layer
class ReverseLayer(Layer):
    """y = x with the order of its entries along reverse_param.axis reversed
    (senlinuc/caffe_ocr's Reverse, for bidirectional recurrent nets)."""

    type = "Reverse"
    exact_num_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        if top[0] is bottom[0]:
            self.fail("does not allow in-place computation")
        self.axis = bottom[0].canonical_axis_index(self.param.reverse_param.axis)

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.flip(self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.flip(self.axis)


@register_layer
class LstmLayer(Layer):
    """The OCR forks' Lstm (tianzhi0549/CTPN, senlinuc/caffe_ocr) over a T x N x I... bottom,
    from a zero state: (i, f, o, g) = (s, s, s, tanh)(W_x x_t + W_h h_{t-1} + b),
    c_t = f c_{t-1} + i g, h_t = o tanh(c_t); top T x N x H. Backward clips each step's gate
    gradients to +-clipping_threshold when that is positive, as the forks do."""

    type = "Lstm"
    exact_num_bottom_blobs = 1     # the forks' optional second bottom (continuation) is not here
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.lstm_param
        if bottom[0].num_axes < 3 or p.num_output < 1:
            self.fail(f"needs a T x N x ... bottom and num_output, got {tuple(bottom[0].shape)}"
                      f" and {p.num_output}")
        h, i = p.num_output, bottom[0].count(2)
        if not self.blobs:
            self.blobs = [self.new_blob((4 * h, i), p.weight_filler),
                          self.new_blob((4 * h, h), p.weight_filler),
                          self.new_blob((4 * h,), p.bias_filler)]

    def reshape(self, bottom, top):
        if bottom[0].count(2) != self.blobs[0].shape[1]:
            self.fail(f"input size {bottom[0].count(2)} differs from the weights' "
                      f"{self.blobs[0].shape[1]}")
        top[0].reshape(tuple(bottom[0].shape[:2]) + (self.param.lstm_param.num_output,))

    def forward(self, bottom, top):
        wx, wh, b = (blob.data for blob in self.blobs)
        x, hidden = bottom[0].data.flatten(2), wh.shape[1]
        pre = x @ wx.T + b
        h = c = x.new_zeros(x.shape[1], hidden)
        gates, cells = [], []
        for t in range(x.shape[0]):
            z = pre[t] + h @ wh.T
            gate = torch.cat([torch.sigmoid(z[:, :3 * hidden]), torch.tanh(z[:, 3 * hidden:])], 1)
            i, f, o, g = gate.split(hidden, 1)
            c = f * c + i * g
            h = o * torch.tanh(c)
            gates.append(gate)
            cells.append(c)
            top[0].data[t] = h
        self.gates, self.cells = torch.stack(gates), torch.stack(cells)

    def backward(self, top, propagate_down, bottom):
        wx, wh, _ = (blob.data for blob in self.blobs)
        clip, hidden = self.param.lstm_param.clipping_threshold, wh.shape[1]
        x, hs = bottom[0].data.flatten(2), top[0].data
        dpre = torch.empty_like(self.gates)
        dh_next = dc = hs.new_zeros(hs.shape[1:])
        for t in range(len(dpre) - 1, -1, -1):
            i, f, o, g = self.gates[t].split(hidden, 1)
            c_prev = self.cells[t - 1] if t else torch.zeros_like(dc)
            dh, tanh_c = top[0].diff[t] + dh_next, torch.tanh(self.cells[t])
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            dz = torch.cat([dc * g * i * (1 - i), dc * c_prev * f * (1 - f),
                            dh * tanh_c * o * (1 - o), dc * i * (1 - g * g)], 1)
            if clip > 0:
                dz = dz.clamp(-clip, clip)
            dpre[t] = dz
            dc, dh_next = dc * f, dz @ wh
        flat = dpre.flatten(0, 1)
        grads = (lambda: flat.T @ x.flatten(0, 1),
                 lambda: dpre[1:].flatten(0, 1).T @ hs[:-1].flatten(0, 1),
                 lambda: flat.sum(0))
        for blob, grad, wanted in zip(self.blobs, grads, self.param_propagate_down):
            if wanted:
                blob.diff.add_(grad())
        if propagate_down[0]:
            bottom[0].diff[...] = (dpre @ wx).view(bottom[0].diff.shape)


def edit_distance(a, b):
    """Levenshtein distance between two label sequences."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@register_layer
class CTCGreedyDecoderLayer(Layer):
    """senlinuc/caffe_ocr's greedy CTC decoding of T x N x C scores: per step the first best
    class; repeats merged (ctc_merge_repeated), blanks dropped. One bottom: top N x T x 1 x 1,
    the labels then -1. With a second bottom (N x L labels, ended by a negative one): top
    1 x 2 x 1 x 1, (1 - mean edit distance / longer length, share of exact sequences)."""

    type = "CTCGreedyDecoder"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 3:
            self.fail(f"needs T x N x C scores, got {tuple(bottom[0].shape)}")
        t, n = bottom[0].shape[:2]
        top[0].reshape((1, 2, 1, 1) if len(bottom) > 1 else (n, t, 1, 1))

    def decode(self, scores):
        p = self.param.ctc_decoder_param
        blank = p.blank_index if p.blank_index >= 0 else scores.shape[2] - 1
        best = scores.flatten(2).argmax(2).T.tolist()       # N lists of T classes
        return [[c for k, c in enumerate(row) if c != blank and not
                 (p.ctc_merge_repeated and k and row[k - 1] == c)] for row in best], blank

    def forward(self, bottom, top):
        sequences, blank = self.decode(bottom[0].data)
        out = top[0].data
        if len(bottom) == 1:
            out.fill_(-1)
            for n, seq in enumerate(sequences):
                out[n, :len(seq), 0, 0] = torch.tensor(seq, dtype=out.dtype)
            return
        edits = exact = 0
        for seq, labels in zip(sequences, bottom[1].data.flatten(1).tolist()):
            ends = [k for k, v in enumerate(labels) if v < 0]
            target = [int(0.5 + v) for v in labels[:ends[0] if ends else len(labels)]]
            target = [v for v in target if v != blank]
            if not target and not seq:
                continue        # the fork skips it: perfect for the first, not counted exact
            d = edit_distance(target, seq)
            edits += d / max(len(target), len(seq))
            exact += d == 0
        out[0, 0, 0, 0] = 1 - edits / len(sequences)
        out[0, 1, 0, 0] = exact / len(sequences)
