"""Loss layers: a scalar objective from predictions and targets; and Accuracy.

Every loss top is a 0-d blob. Its diff holds the loss weight (the Net fills it), and
backward scales the bottom gradient by that weight, as Caffe's loss layers do.
"""
import math

import torch

from ..blob_proto import blob_from_proto
from ..errors import CaffeError
from ..formats import read_binaryproto
from ..layer import Layer, register_layer
from ..proto import caffe_pb2

_Norm = caffe_pb2.LossParameter
LOG_FLT_MIN = math.log(1.1754943508222875e-38)   # SoftmaxWithLoss clamps p at FLT_MIN
LOG_THRESHOLD = 1e-20                            # Caffe's kLOG_THRESHOLD


def normalization_mode(loss_param, default):
    """loss_param.normalization; else the legacy `normalize` (true = VALID); else `default`."""
    if loss_param.HasField("normalization"):
        return loss_param.normalization
    if loss_param.HasField("normalize"):
        return _Norm.VALID if loss_param.normalize else _Norm.BATCH_SIZE
    return default


def normalizer(mode, outer, inner, valid):
    """Caffe's get_normalizer, at least 1 so that a batch of ignored labels gives 0, not NaN."""
    if mode == _Norm.VALID and valid is not None:
        return valid.sum().clamp(min=1)     # an integer tensor: keeps the data's dtype
    n = {_Norm.FULL: outer * inner, _Norm.VALID: outer * inner, _Norm.BATCH_SIZE: outer,
         _Norm.NONE: 1}[mode]
    return float(max(1, n))


def ignore_label_of(param):
    return param.ignore_label if param.HasField("ignore_label") else None


def class_labels(layer, label, num_classes, ignore_label=None):
    """Labels as class indices (ignored ones set to 0) and the mask of those that count.

    Caffe truncates labels to int; one outside [0, num_classes) is an error (Caffe aborts).
    """
    lab = label.trunc()
    if ignore_label is None:
        valid = torch.ones_like(lab, dtype=torch.bool)
    else:
        valid = lab != ignore_label
    bad = valid & ~((lab >= 0) & (lab < num_classes))
    if bool(bad.any()):
        where = int(bad.flatten().nonzero()[0])
        hint = f" (ignore_label is {ignore_label})" if ignore_label is not None else ""
        value = float(label.flatten()[where])
        raise CaffeError(f"layer '{layer.name}' ({layer.type}): label {value:g} at position "
                         f"{where} is outside [0, {num_classes}){hint}")
    return torch.where(valid, lab, torch.zeros_like(lab)).long(), valid


def class_axis(layer, bottom, axis):
    """(axis, outer, inner) of the class axis, checking one label per prediction."""
    axis = bottom[0].canonical_axis_index(axis)
    outer, inner = bottom[0].count(0, axis), bottom[0].count(axis + 1)
    if outer * inner != bottom[1].count():
        layer.fail(f"number of labels must match number of predictions: prediction shape "
                   f"{bottom[0].shape} with class axis {axis} needs {outer * inner} labels, "
                   f"label shape {bottom[1].shape} holds {bottom[1].count()}")
    return axis, outer, inner


class LossLayer(Layer):
    """Base of the loss layers: predictions and targets in, a weighted scalar out."""

    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        # Caffe's LossLayer::LayerSetUp: a loss counts with weight 1 unless told otherwise.
        # Extra tops (the probabilities) get 0, where Caffe would refuse the unweighted net.
        if not len(self.param.loss_weight):
            self.param.loss_weight.extend([1.0] + [0.0] * (len(top) - 1))

    def reshape(self, bottom, top):
        if bottom[0].shape[:1] != bottom[1].shape[:1]:
            self.fail(f"the data and label should have the same first dimension, got shapes "
                      f"{bottom[0].shape} and {bottom[1].shape}")
        top[0].reshape(())

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def refuse_backward(self, propagate_down, indices=(1,), what="label"):
        if any(i < len(propagate_down) and propagate_down[i] for i in indices):
            raise CaffeError(f"layer '{self.name}' ({self.type}) cannot backpropagate to {what} "
                             f"inputs")


@register_layer
class SoftmaxWithLossLayer(LossLayer):
    """loss = -sum_{n: label_n != ignore} log softmax(x)[n, label_n] / normalizer.

    An optional second top receives softmax(x).
    """

    type = "SoftmaxWithLoss"
    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.ignore_label = ignore_label_of(self.param.loss_param)
        self.normalization = normalization_mode(self.param.loss_param, _Norm.VALID)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        _, self.outer, self.inner = class_axis(self, bottom, self.param.softmax_param.axis)
        if len(top) > 1:
            top[1].reshape_like(bottom[0])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, -1, self.inner)
        self.idx, self.valid = class_labels(self, bottom[1].data.reshape(self.outer, self.inner),
                                            x.shape[1], self.ignore_label)
        logp = torch.log_softmax(x, 1)
        picked = logp.gather(1, self.idx.unsqueeze(1)).squeeze(1).clamp(min=LOG_FLT_MIN)
        self.norm = normalizer(self.normalization, self.outer, self.inner, self.valid)
        top[0].data[...] = -torch.where(self.valid, picked, 0).sum() / self.norm
        self.prob = logp.exp()
        if len(top) > 1:
            top[1].data.view(x.shape)[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        grad = self.prob.scatter_add(1, self.idx.unsqueeze(1),
                                     torch.full_like(self.prob[:, :1], -1.0))
        grad *= self.valid.unsqueeze(1) * (top[0].diff / self.norm)
        bottom[0].diff[...] = grad.view(bottom[0].shape)


@register_layer
class InfogainLossLayer(LossLayer):
    """loss = -sum_{n: label_n != ignore} sum_k H[label_n, k] log softmax(x)[n, k] / normalizer.

    H comes from a third bottom or from the file infogain_loss_param.source; an optional
    second top receives softmax(x).
    """

    type = "InfogainLoss"
    exact_num_bottom_blobs = -1
    min_bottom_blobs = 2
    max_bottom_blobs = 3
    exact_num_top_blobs = -1
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        super().setup(bottom, top)
        lp = self.param.loss_param
        if lp.HasField("normalize"):
            self.fail('loss_param.normalize is deprecated for InfogainLoss; use "normalization"')
        self.ignore_label = ignore_label_of(lp)
        self.normalization = lp.normalization
        self.infogain = None
        if len(bottom) < 3:
            source = self.param.infogain_loss_param.source
            if not source:
                self.fail("the infogain matrix H needs infogain_loss_param.source or a third "
                          "bottom")
            self.infogain = blob_from_proto(read_binaryproto(source), self.dtype, self.device).data

    def matrix(self, bottom):
        return bottom[2].data if len(bottom) > 2 else self.infogain

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        p = self.param.infogain_loss_param
        axis, self.outer, self.inner = class_axis(self, bottom, p.axis)
        c = bottom[0].shape[axis]
        h = self.matrix(bottom)
        if h.numel() != c * c:
            self.fail(f"infogain matrix H must hold {c} x {c} = {c * c} values for {c} classes, "
                      f"got shape {tuple(h.shape)}")
        if len(top) > 1:
            top[1].reshape_like(bottom[0])

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, -1, self.inner)
        c = x.shape[1]
        self.idx, self.valid = class_labels(self, bottom[1].data.reshape(self.outer, self.inner),
                                            c, self.ignore_label)
        # Row H[label] for every item, laid out like x: (outer, classes, inner).
        rows = self.matrix(bottom).reshape(c, c)[self.idx].permute(0, 2, 1)
        logp = torch.log_softmax(x, 1)
        per_item = (rows * logp.clamp(min=math.log(LOG_THRESHOLD))).sum(1)
        self.norm = normalizer(self.normalization, self.outer, self.inner, self.valid)
        top[0].data[...] = -torch.where(self.valid, per_item, 0).sum() / self.norm
        self.prob = logp.exp()
        if len(top) > 1:
            top[1].data.view(x.shape)[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        self.refuse_backward(propagate_down, (2,), "infogain matrix")
        if not propagate_down[0]:
            return
        c = self.prob.shape[1]
        h = self.matrix(bottom).reshape(c, c)
        rows = h[self.idx].permute(0, 2, 1)
        # d/dx_k of -sum_j H[y, j] log p_j = p_k * sum_j H[y, j] - H[y, k]
        grad = self.prob * h.sum(1)[self.idx].unsqueeze(1) - rows
        grad *= self.valid.unsqueeze(1) * (top[0].diff / self.norm)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)

    def allow_force_backward(self, bottom_index):
        # Caffe also allows H (bottom 2) and then aborts in Backward; we leave it out.
        return bottom_index == 0


class _OneLabelPerItemLoss(LossLayer):
    """A loss over N items of any shape with exactly one class label per item."""

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[1].count() != bottom[0].num:
            self.fail(f"needs one label per item: {bottom[0].num} items, label shape "
                      f"{bottom[1].shape}")


@register_layer
class MultinomialLogisticLossLayer(_OneLabelPerItemLoss):
    """loss = -sum_n log max(p[n, label_n], 1e-20) / N, p given as probabilities."""

    type = "MultinomialLogisticLoss"

    def forward(self, bottom, top):
        num = bottom[0].num
        p = bottom[0].data.reshape(num, -1)
        self.idx, _ = class_labels(self, bottom[1].data.reshape(num), p.shape[1])
        self.picked = p.gather(1, self.idx.unsqueeze(1)).clamp(min=LOG_THRESHOLD)
        top[0].data[...] = -self.picked.log().sum() / num

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        num = bottom[0].num
        diff = bottom[0].diff.view(num, -1)
        diff.zero_()
        diff.scatter_(1, self.idx.unsqueeze(1), -top[0].diff / num / self.picked)


@register_layer
class HingeLossLayer(_OneLabelPerItemLoss):
    """loss = sum_{n,k} max(0, 1 - t_nk x_nk)^p / N; t = 1 at the label, -1 elsewhere; p = 1, 2."""

    type = "HingeLoss"

    def forward(self, bottom, top):
        num = bottom[0].num
        x = bottom[0].data.reshape(num, -1)
        idx, _ = class_labels(self, bottom[1].data.reshape(num), x.shape[1])
        # sign = -t: the label entry is negated, the others kept, as in Caffe.
        sign = torch.ones_like(x).scatter_(1, idx.unsqueeze(1), -1.0)
        margin = (1 + sign * x).clamp(min=0)
        self.signed_margin = margin * sign
        l2 = self.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2
        top[0].data[...] = (margin.square() if l2 else margin).sum() / num

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num = bottom[0].num
        g = self.signed_margin
        if self.param.hinge_loss_param.norm == caffe_pb2.HingeLossParameter.L2:
            g = 2 * g
        else:
            g = g.sign()        # 0 at the hinge itself, as caffe_cpu_sign
        bottom[0].diff[...] = (g * (top[0].diff / num)).view(bottom[0].shape)


@register_layer
class EuclideanLossLayer(LossLayer):
    """loss = ||a - b||^2 / 2N; b may have a different shape with the same count per item."""

    type = "EuclideanLoss"

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count(1) != bottom[1].count(1):
            self.fail(f"inputs must have the same dimension, got shapes {bottom[0].shape} and "
                      f"{bottom[1].shape}")

    def forward(self, bottom, top):
        self.diff = bottom[0].data - bottom[1].data.reshape(bottom[0].shape)
        top[0].data[...] = self.diff.square().sum() / bottom[0].num / 2

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                scale = sign * top[0].diff / bottom[i].num
                bottom[i].diff[...] = (scale * self.diff).view(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return True


@register_layer
class ContrastiveLossLayer(LossLayer):
    """loss = sum_n [y_n d_n^2 + (1 - y_n) max(m - d_n, 0)^2] / 2N, d_n = ||a_n - b_n||.

    legacy_version uses max(m - d_n^2, 0) for dissimilar pairs.
    """

    type = "ContrastiveLoss"
    exact_num_bottom_blobs = 3

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        a, b, y = bottom
        for blob in (a, b):
            if blob.count() != blob.num * blob.channels:
                self.fail(f"features must be N x C (x 1 x 1), got shape {blob.shape}")
        if a.channels != b.channels:
            self.fail(f"both features need the same size, got shapes {a.shape} and {b.shape}")
        if y.count() != a.num:
            self.fail(f"needs one similarity label per pair: {a.num} pairs, label shape {y.shape}")

    def forward(self, bottom, top):
        p = self.param.contrastive_loss_param
        num = bottom[0].num
        self.diff = (bottom[0].data - bottom[1].data.reshape(bottom[0].shape)).reshape(num, -1)
        self.dist_sq = self.diff.square().sum(1)
        self.similar = bottom[2].data.reshape(num).trunc() != 0
        if p.legacy_version:
            apart = (p.margin - self.dist_sq).clamp(min=0)
        else:
            apart = (p.margin - self.dist_sq.sqrt()).clamp(min=0).square()
        top[0].data[...] = torch.where(self.similar, self.dist_sq, apart).sum() / num / 2

    def backward(self, top, propagate_down, bottom):
        p = self.param.contrastive_loss_param
        alpha = top[0].diff / bottom[0].num
        if p.legacy_version:
            pull = p.margin - self.dist_sq
            beta = -alpha.expand_as(pull)
        else:
            dist = self.dist_sq.sqrt()
            pull = p.margin - dist
            beta = -alpha * pull / (dist + 1e-4)   # Caffe's epsilon keeps d = 0 finite
        coef = torch.where(self.similar, alpha, torch.where(pull > 0, beta, 0)).unsqueeze(1)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff[...] = (sign * coef * self.diff).view(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2


@register_layer
class SigmoidCrossEntropyLossLayer(LossLayer):
    """loss = -sum_{i: t_i != ignore} [t_i log s(x_i) + (1 - t_i) log(1 - s(x_i))] / normalizer."""

    type = "SigmoidCrossEntropyLoss"

    def setup(self, bottom, top):
        super().setup(bottom, top)
        self.ignore_label = ignore_label_of(self.param.loss_param)
        self.normalization = normalization_mode(self.param.loss_param, _Norm.BATCH_SIZE)

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        if bottom[0].count() != bottom[1].count():
            self.fail(f"inputs must have the same count, got shapes {bottom[0].shape} and "
                      f"{bottom[1].shape}")

    def forward(self, bottom, top):
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        self.valid = None if self.ignore_label is None else t.trunc() != self.ignore_label
        # x (t - [x >= 0]) - log(1 + exp(-|x|)) is log-likelihood without overflow.
        ll = x * (t - (x >= 0).to(x.dtype)) - torch.log1p(torch.exp(-x.abs()))
        if self.valid is not None:
            ll = torch.where(self.valid, ll, 0)
        self.norm = normalizer(self.normalization, bottom[0].count(0, 1), bottom[0].count(1),
                               self.valid)
        top[0].data[...] = -ll.sum() / self.norm

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down)
        if not propagate_down[0]:
            return
        x = bottom[0].data
        grad = torch.sigmoid(x) - bottom[1].data.reshape(x.shape)
        if self.valid is not None:
            grad = torch.where(self.valid, grad, 0)
        bottom[0].diff[...] = grad * (top[0].diff / self.norm)


@register_layer
class AccuracyLayer(Layer):
    """accuracy = share of counted labels with fewer than top_k other classes scoring >= theirs."""

    type = "Accuracy"
    exact_num_bottom_blobs = 2
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = p.top_k
        self.ignore_label = ignore_label_of(p)

    def reshape(self, bottom, top):
        if bottom[1].count() and self.top_k > bottom[0].count() // bottom[1].count():
            self.fail(f"top_k ({self.top_k}) must be less than or equal to the number of classes "
                      f"({bottom[0].count() // bottom[1].count()})")
        axis, self.outer, self.inner = class_axis(self, bottom, self.param.accuracy_param.axis)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((bottom[0].shape[axis],))

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.outer, -1, self.inner)
        c = x.shape[1]
        idx, valid = class_labels(self, bottom[1].data.reshape(self.outer, self.inner), c,
                                  self.ignore_label)
        truth = x.gather(1, idx.unsqueeze(1))
        # Ties count against the true class; it counts itself once, hence the -1.
        hit = valid & ((x >= truth).sum(1) - 1 < self.top_k)
        count = valid.sum().to(x.dtype)
        top[0].data[...] = torch.where(count > 0, hit.sum().to(x.dtype) / count.clamp(min=1), 0)
        if len(top) > 1:
            zeros = torch.zeros(c, dtype=x.dtype, device=x.device)
            seen = zeros.index_add(0, idx.flatten(), valid.flatten().to(x.dtype))
            right = zeros.index_add(0, idx.flatten(), hit.flatten().to(x.dtype))
            top[1].data[...] = torch.where(seen > 0, right / seen.clamp(min=1), 0)

    def allow_force_backward(self, bottom_index):
        # Caffe aborts (NOT_IMPLEMENTED) if asked; the scores get no gradient from here.
        return False
