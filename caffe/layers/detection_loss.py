"""The detection forks' losses: SmoothL1Loss (both forks' dialects) and SSD's MultiBoxLoss.

SSD (weiliu89/caffe) and Faster R-CNN (rbgirshick/caffe-fast-rcnn) each register a
"SmoothL1Loss"; one class serves both, telling them apart by the layer itself (see
SmoothL1LossLayer and docs/forks/detection.md).
"""
import numpy as np
import torch

from ..layer import register_layer
from ..proto import caffe_pb2
from . import bbox_util
from .loss import LOG_FLT_MIN, LossLayer, normalization_mode

_MB = caffe_pb2.MultiBoxLossParameter
_Norm = caffe_pb2.LossParameter


def smooth_l1(d, sigma2=1.0):
    """f(d) = 0.5 sigma^2 d^2 if |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2; and f'(d)."""
    small = d.abs() < 1.0 / sigma2
    value = torch.where(small, 0.5 * sigma2 * d * d, d.abs() - 0.5 / sigma2)
    return value, torch.where(small, sigma2 * d, torch.sign(d))


@register_layer
class SmoothL1LossLayer(LossLayer):
    """loss = sum w_out f_sigma(w_in (p - t)) / N over prediction p (bottom[0]) and target t
    (bottom[1]), N = bottom[0].num.

    Dialect, from the layer: Faster R-CNN when smooth_l1_loss_param is given or there are 4
    bottoms (p, t, inside weights w_in, outside weights w_out; sigma from the param);
    SSD with 3 bottoms (p, t, weight w = w_in; sigma 1, no w_out); with 2 bottoms and no
    param both forks compute the same thing.
    """

    type = "SmoothL1Loss"
    exact_num_bottom_blobs = -1
    min_bottom_blobs = 2
    max_bottom_blobs = 4

    def setup(self, bottom, top):
        super().setup(bottom, top)
        faster_rcnn = self.param.HasField("smooth_l1_loss_param") or len(bottom) == 4
        if faster_rcnn and len(bottom) == 3:
            self.fail("Faster R-CNN's SmoothL1Loss (smooth_l1_loss_param given) needs both "
                      "inside and outside weights (4 bottoms); SSD's takes 3 bottoms but no "
                      "smooth_l1_loss_param")
        self.dialect = "faster-rcnn" if faster_rcnn else "ssd"
        self.sigma2 = self.param.smooth_l1_loss_param.sigma ** 2

    def reshape(self, bottom, top):
        super().reshape(bottom, top)
        for i, b in enumerate(bottom[1:], 1):
            if b.count(1) != bottom[0].count(1):
                self.fail(f"bottom {i} of shape {b.shape} does not match the prediction's "
                          f"{bottom[0].shape}")

    def forward(self, bottom, top):
        d = bottom[0].data - bottom[1].data.view(bottom[0].shape)
        if len(bottom) > 2:
            d = d * bottom[2].data.view(d.shape)
        value, self.grad = smooth_l1(d, self.sigma2)
        if len(bottom) > 3:
            value = value * bottom[3].data.view(d.shape)
        top[0].data[...] = value.sum() / bottom[0].num

    def backward(self, top, propagate_down, bottom):
        # The weights get no gradient, whatever propagate_down asks, as in both forks (their
        # backward loops over bottoms 0 and 1): py-faster-rcnn's weights come from a Python
        # layer downstream of the RPN, so Caffe's net asks for them.
        grad = self.grad
        # SSD's backward leaves out its weight (it stays inside f only); Faster R-CNN's
        # multiplies by both weights.
        if self.dialect == "faster-rcnn" and len(bottom) > 2:
            grad = grad * bottom[2].data.view(grad.shape) * bottom[3].data.view(grad.shape)
        for i, sign in ((0, 1.0), (1, -1.0)):
            if propagate_down[i]:
                bottom[i].diff.view(grad.shape)[...] = grad * (sign * top[0].diff / bottom[i].num)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2


def _normalizer(mode, num, num_priors, num_matches):
    n = {_Norm.FULL: num * num_priors, _Norm.VALID: num_matches, _Norm.BATCH_SIZE: num,
         _Norm.NONE: 1}[mode]
    return float(max(1, n))


@register_layer
class MultiBoxLossLayer(LossLayer):
    """SSD's training loss. Bottoms: location offsets (N, P L 4), confidences (N, P C),
    priors (1, 2, P 4), ground truth (1, 1, G, 8) rows (item, label, instance, xmin, ymin,
    xmax, ymax, difficult).

    Each ground-truth box is matched to priors (bipartite, then PER_PREDICTION overlaps of
    at least overlap_threshold); negatives are mined (MAX_NEGATIVE: the neg_pos_ratio x
    #matches unmatched priors of highest confidence loss; HARD_EXAMPLE: the sample_size
    priors of highest loss). loss = (loc_weight sum_matched l(p - encode(gt)) +
    sum_selected softmax (or logistic) loss) / normalizer, l smooth L1 (or L2 / 2), the
    normalizer per loss_param.normalization (VALID: the number of matches).
    """

    type = "MultiBoxLoss"
    exact_num_bottom_blobs = 4

    def setup(self, bottom, top):
        super().setup(bottom, top)
        p = self.param.multibox_loss_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            self.fail("must provide num_classes >= 1")
        self.mining = p.mining_type != _MB.NONE
        if p.HasField("do_neg_mining") and p.do_neg_mining != self.mining:
            self.fail("do_neg_mining (deprecated) contradicts mining_type")
        if self.mining and not p.share_location:
            self.fail("negative mining needs share_location: true")
        if self.mining and p.HasField("nms_param") and p.nms_param.nms_threshold > 0:
            self.fail("non-maximum suppression during mining (nms_param) is not supported")
        if p.background_label_id >= p.num_classes:
            self.fail(f"background_label_id {p.background_label_id} must be below num_classes "
                      f"{p.num_classes}")
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.normalization = normalization_mode(self.param.loss_param, _Norm.VALID)
        # The fork counts a part only when the layer's propagate_down lets it (default:
        # locations and confidences yes, priors and labels no).
        pd = list(self.param.propagate_down) or [True, True, False, False]
        self.use_loc, self.use_conf = pd[0], pd[1]

    def reshape(self, bottom, top):
        top[0].reshape(())
        p = self.param.multibox_loss_param
        self.num_priors = bottom[2].height // 4
        if bottom[0].count(1) != self.num_priors * self.loc_classes * 4 or \
                bottom[1].count(1) != self.num_priors * p.num_classes:
            self.fail(f"{bottom[0].count(1)} locations and {bottom[1].count(1)} confidences do "
                      f"not fit {self.num_priors} priors, {p.num_classes} classes")

    def _match(self, i, gt, prior, loc):
        """{label: (gt index per prior, overlap per prior)} of image i, as FindMatches."""
        p = self.param.multibox_loss_param
        if i not in gt:
            return {}
        boxes, labels, _ = gt[i]
        args = (p.match_type, p.overlap_threshold, p.ignore_cross_boundary_bbox)
        if p.use_prior_for_matching:
            idx, ov = bbox_util.match(boxes, prior[0], *args)
            if p.share_location:
                return {-1: (idx, ov)}
            gl = labels.cpu().numpy()
            return {c: (np.where((idx > -1) & (gl[np.maximum(idx, 0)] == c), idx, -1), ov)
                    for c in range(self.loc_classes) if c != p.background_label_id}
        found = {}
        for c in ([-1] if p.share_location else range(self.loc_classes)):
            if c == p.background_label_id and not p.share_location:
                continue
            pred = bbox_util.decode(prior[0], prior[1], loc[i, :, max(c, 0)], p.code_type,
                                    p.encode_variance_in_target)
            keep = torch.ones_like(labels, dtype=torch.bool) if c == -1 else labels == c
            where = keep.nonzero().view(-1).cpu().numpy()
            idx, ov = bbox_util.match(boxes[keep], pred, *args)
            found[c] = (np.where(idx > -1, where[np.maximum(idx, 0)], idx) if where.size
                        else idx, ov)
        return found

    def _conf_loss(self, x, labels):
        """Per row of confidences x (R, C): the loss of class `labels` (R,) and its gradient."""
        p = self.param.multibox_loss_param
        if p.conf_loss_type == _MB.SOFTMAX:
            logp = torch.log_softmax(x, 1)
            loss = -logp.gather(1, labels[:, None]).squeeze(1).clamp(min=LOG_FLT_MIN)
            return loss, logp.exp() - torch.nn.functional.one_hot(labels, x.shape[1]).to(x)
        t = torch.nn.functional.one_hot(labels, x.shape[1]).to(x)
        return self._logistic(x, t)

    @staticmethod
    def _logistic(x, t):
        """Caffe's stable sigmoid cross-entropy per row, and its gradient."""
        pos = (x >= 0).to(x)
        loss = -(x * (t - pos) - torch.log1p(torch.exp(x - 2 * x * pos)))
        return loss.sum(-1), torch.sigmoid(x) - t

    def _mine(self, i, matches, conf, loc_cost):
        """Select negatives (and, HARD_EXAMPLE, drop unselected positives) of image i."""
        p = self.param.multibox_loss_param
        if -1 not in matches:
            return []
        idx, ov = matches[-1]
        labels = torch.full((self.num_priors,), p.background_label_id, dtype=torch.long)
        hit = idx > -1
        labels[torch.from_numpy(hit)] = torch.from_numpy(self.gt_labels[i][idx[hit]])
        cost = self._conf_loss(conf[i], labels.to(conf.device))[0].cpu() + loc_cost
        if p.mining_type == _MB.MAX_NEGATIVE:
            eligible = (idx == -1) & (ov < p.neg_overlap)
            num_sel = min(int(int((idx > -1).sum()) * p.neg_pos_ratio), int(eligible.sum()))
        else:
            eligible = np.ones(self.num_priors, bool)
            num_sel = min(p.sample_size, self.num_priors)
        cand = torch.from_numpy(np.flatnonzero(eligible))
        order = torch.sort(cost[cand], descending=True, stable=True).indices[:num_sel]
        chosen = np.zeros(self.num_priors, bool)
        chosen[cand[order].numpy()] = True
        if p.mining_type == _MB.HARD_EXAMPLE:
            idx[(idx > -1) & ~chosen] = -1
        return np.flatnonzero(chosen & (idx == -1)).tolist()

    def forward(self, bottom, top):
        p, n = self.param.multibox_loss_param, bottom[0].num
        loc = bottom[0].data.reshape(n, self.num_priors, self.loc_classes, 4)
        conf = bottom[1].data.reshape(n, self.num_priors, p.num_classes)
        prior = bottom[2].data.reshape(2, -1, 4)
        gt = bbox_util.ground_truth(bottom[3].data, p.background_label_id, p.use_difficult_gt)
        self.gt_labels = {i: g[1].cpu().numpy() for i, g in gt.items()}
        matches = [self._match(i, gt, prior, loc) for i in range(n)]
        self.negatives = [[] for _ in range(n)]
        if self.mining:
            for i in range(n):
                cost = torch.zeros(self.num_priors, dtype=conf.dtype)
                if p.mining_type == _MB.HARD_EXAMPLE and matches[i]:
                    pos, _, value = self._loc_terms([(i, matches[i])], gt, prior, loc)
                    cost[pos[1].cpu()] = value.sum(1).cpu()
                self.negatives[i] = self._mine(i, matches[i], conf, cost)
        self.pos, d, value = self._loc_terms(enumerate(matches), gt, prior, loc)
        self.num_matches = self.pos[0].numel()
        self.norm = _normalizer(self.normalization, n, self.num_priors, self.num_matches)
        self.loc_grad = d if p.loc_loss_type == _MB.L2 else smooth_l1(d)[1]
        conf_loss = self._conf_terms(matches, conf)
        total = 0.0
        if self.use_loc:
            total = total + p.loc_weight * value.sum() / self.norm
        if self.use_conf:
            total = total + conf_loss / self.norm
        top[0].data[...] = total

    def _loc_terms(self, matches, gt, prior, loc):
        """((image, prior, loc class) of every match of the (image, matches) pairs,
        p - encode(gt), loss per coordinate)."""
        p = self.param.multibox_loss_param
        where = [(i, j, 0 if c == -1 else c, g) for i, m in matches
                 for c, (idx, _) in sorted(m.items()) for j, g in enumerate(idx.tolist())
                 if g > -1]
        if not where:
            empty = loc.new_zeros((0, 4))
            return (torch.zeros(0, dtype=torch.long),) * 3, empty, empty
        i, j, c, g = (torch.tensor(v, device=loc.device) for v in zip(*where))
        boxes = torch.stack([gt[int(a)][0][int(b)] for a, b in zip(i.tolist(), g.tolist())])
        pv, var = prior[0][j], prior[1][j]
        target = bbox_util.encode(pv, var, boxes, p.code_type, p.encode_variance_in_target)
        pred = loc[i, j, c]
        if p.bp_inside:
            ref = pv if p.use_prior_for_matching else bbox_util.decode(
                pv, var, pred, p.code_type, p.encode_variance_in_target)
            pred = torch.where((ref < 0) | (ref > 1), target, pred)
        if p.encode_variance_in_target:
            pred, target = pred / var, target / var
        d = pred - target
        value = 0.5 * d * d if p.loc_loss_type == _MB.L2 else smooth_l1(d)[0]
        return (i, j, c), d, value

    def _conf_terms(self, matches, conf):
        """The confidence loss; keeps the rows' positions and gradients for backward."""
        p, n = self.param.multibox_loss_param, conf.shape[0]
        label_of = np.full((n, self.num_priors), p.background_label_id, np.int64)
        for i, m in enumerate(matches):
            for idx, _ in m.values():
                hit = idx > -1
                label_of[i, hit] = (p.background_label_id + 1 if p.map_object_to_agnostic
                                    else self.gt_labels[i][idx[hit]])
        if self.mining:
            rows = [(i, j) for i, m in enumerate(matches) for idx, _ in m.values()
                    for j in np.flatnonzero(idx > -1).tolist()]
            rows += [(i, j) for i in range(n) for j in self.negatives[i]]
        else:
            rows = [(i, j) for i in range(n) for j in range(self.num_priors)]
        self.conf_rows = None
        if not rows:
            return 0.0
        ri, rj = (torch.tensor(v, device=conf.device) for v in zip(*rows))
        labels = torch.from_numpy(label_of[ri.cpu().numpy(), rj.cpu().numpy()]).to(conf.device)
        x = conf[ri, rj]
        self.all_rows = False
        if p.conf_loss_type == _MB.SOFTMAX:
            loss, grad = self._conf_loss(x, labels)
        elif self.mining:
            # The fork's targets start as background_label_id everywhere.
            t = torch.full_like(x, float(p.background_label_id))
            t[torch.arange(len(rows)), labels] = 1.0
            loss, grad = self._logistic(x, t)
        else:
            # LOGISTIC without mining: the fork steps its target pointer by P (not P C) per
            # image; kept so that its numbers are reproduced.
            t = torch.full((n * self.num_priors * p.num_classes,), float(p.background_label_id),
                           dtype=conf.dtype, device=conf.device)
            for i, m in enumerate(matches):
                for idx, _ in m.values():
                    for j in np.flatnonzero(idx > -1).tolist():
                        lab = label_of[i, j]
                        t[i * self.num_priors + j * p.num_classes + lab] = 1.0
            loss, grad = self._logistic(conf.reshape(1, -1), t[None])
            self.all_rows = True
        self.conf_rows, self.conf_grad = (ri, rj), grad
        return loss.sum()

    def backward(self, top, propagate_down, bottom):
        self.refuse_backward(propagate_down, (2,), "prior")
        self.refuse_backward(propagate_down, (3,), "label")
        p, n = self.param.multibox_loss_param, bottom[0].num
        scale = top[0].diff / self.norm
        if propagate_down[0]:
            diff = bottom[0].diff.view(n, self.num_priors, self.loc_classes, 4)
            diff.zero_()
            if self.num_matches:
                i, j, c = self.pos
                diff[i, j, c] = self.loc_grad * (p.loc_weight * scale)
        if propagate_down[1]:
            diff = bottom[1].diff.view(n, self.num_priors, p.num_classes)
            diff.zero_()
            if self.conf_rows is not None:
                if self.all_rows:                       # LOGISTIC without mining
                    diff.view(-1)[...] = self.conf_grad.view(-1) * scale
                else:
                    diff[self.conf_rows] = self.conf_grad * scale

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2
