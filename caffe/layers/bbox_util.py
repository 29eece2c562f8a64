"""Box arithmetic of the SSD fork (its util/bbox_util), on tensors of (..., 4) boxes.

A box is (xmin, ymin, xmax, ymax) in coordinates normalised to [0, 1]. A box with
xmax < xmin or ymax < ymin has size 0, as the fork's BBoxSize says.
"""
import numpy as np
import torch

from ..proto import caffe_pb2

CORNER = caffe_pb2.PriorBoxParameter.CORNER
CENTER_SIZE = caffe_pb2.PriorBoxParameter.CENTER_SIZE
CORNER_SIZE = caffe_pb2.PriorBoxParameter.CORNER_SIZE


def box_size(b, normalized=True):
    """Area, 0 for an inverted box; unnormalised (pixel) boxes count both end pixels."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    if not normalized:
        w, h = w + 1, h + 1
    bad = (b[..., 2] < b[..., 0]) | (b[..., 3] < b[..., 1])
    return torch.where(bad, torch.zeros_like(w), w * h)


def jaccard(a, b, normalized=True):
    """Jaccard overlap of every box of a (A, 4) with every box of b (B, 4): (A, B)."""
    a, b = a[:, None, :], b[None, :, :]
    iw = torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])
    ih = torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])
    if not normalized:
        iw, ih = iw + 1, ih + 1
    inter = iw * ih
    union = box_size(a, normalized) + box_size(b, normalized) - inter
    return torch.where((iw > 0) & (ih > 0), inter / union, torch.zeros_like(inter))


def _centre_size(b):
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return (b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2, w, h


def encode(prior, variance, box, code_type, variance_in_target):
    """The regression target of `box` against `prior` (EncodeBBox); all (..., 4)."""
    var = torch.ones_like(variance) if variance_in_target else variance
    if code_type == CORNER:
        return (box - prior) / var
    px, py, pw, ph = _centre_size(prior)
    if code_type == CENTER_SIZE:
        bx, by, bw, bh = _centre_size(box)
        out = torch.stack([(bx - px) / pw, (by - py) / ph,
                           torch.log(bw / pw), torch.log(bh / ph)], -1)
        return out / var
    if code_type == CORNER_SIZE:
        return (box - prior) / torch.stack([pw, ph, pw, ph], -1) / var
    raise ValueError(f"unknown code_type {code_type}")


def decode(prior, variance, loc, code_type, variance_in_target):
    """Boxes from predicted offsets `loc` relative to `prior` (DecodeBBox); all (..., 4)."""
    var = torch.ones_like(variance) if variance_in_target else variance
    if code_type == CORNER:
        return prior + var * loc
    px, py, pw, ph = _centre_size(prior)
    if code_type == CENTER_SIZE:
        cx = var[..., 0] * loc[..., 0] * pw + px
        cy = var[..., 1] * loc[..., 1] * ph + py
        w = torch.exp(var[..., 2] * loc[..., 2]) * pw
        h = torch.exp(var[..., 3] * loc[..., 3]) * ph
        return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)
    if code_type == CORNER_SIZE:
        return prior + var * loc * torch.stack([pw, ph, pw, ph], -1)
    raise ValueError(f"unknown code_type {code_type}")


def score_order(scores, threshold=None, top_k=-1):
    """Indices of scores above `threshold`, highest first, ties in index order, at most top_k."""
    idx = torch.arange(scores.numel(), device=scores.device)
    if threshold is not None:
        keep = scores > threshold
        scores, idx = scores[keep], idx[keep]
    order = torch.sort(scores, descending=True, stable=True).indices
    if top_k > -1:
        order = order[:top_k]
    return idx[order]


def nms(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1, normalized=True,
        limit=None):
    """The fork's ApplyNMSFast: greedy, highest score first; a box is kept when it overlaps
    every kept box at most `nms_threshold`, which shrinks by eta after each kept box while
    above 0.5; at most `limit` are kept (OpenCV's NMSFast_). Returns the kept indices (a
    list), highest score first."""
    order = score_order(scores, score_threshold, top_k)
    if order.numel() == 0:
        return []
    overlap = jaccard(boxes[order], boxes[order], normalized).cpu().numpy()
    order = order.tolist()
    kept, threshold = [], nms_threshold
    for i in range(len(order)):
        if kept and overlap[i, kept].max() > threshold:
            continue
        kept.append(i)
        if limit is not None and len(kept) >= limit:
            break
        if eta < 1 and threshold > 0.5:
            threshold *= eta
    return [order[i] for i in kept]


def match(gt, preds, match_type, overlap_threshold, ignore_cross_boundary=False):
    """The fork's MatchBBox: for each prediction (prior) the index of its ground-truth box
    (-1 none, -2 ignored) and its best overlap.

    First every ground-truth box takes, greedily by largest overlap, a prediction of its own
    (bipartite); PER_PREDICTION then gives each unmatched prediction the ground truth it
    overlaps most, if at least overlap_threshold.
    """
    num_pred = preds.shape[0]
    indices = np.full(num_pred, -1, np.int64)
    overlaps = np.zeros(num_pred, np.float32)
    if gt.shape[0] == 0:
        return indices, overlaps
    iou = jaccard(preds, gt).cpu().numpy().astype(np.float32)
    if ignore_cross_boundary:
        crossing = ((preds < 0) | (preds > 1)).any(-1).cpu().numpy()
        indices[crossing] = -2
        iou[crossing] = 0
    present = iou > 1e-6       # the fork keeps only these pairs
    overlaps[:] = np.where(present, iou, 0).max(1)
    table = np.where(present, iou, -1.0)
    free = table.copy()
    for _ in range(gt.shape[0]):
        flat = int(free.argmax())      # first maximum in (prediction, gt) order, as the fork
        i, j = divmod(flat, free.shape[1])
        if free[i, j] <= 0:
            break
        indices[i], overlaps[i] = j, free[i, j]
        free[i, :] = -1
        free[:, j] = -1
    if match_type == caffe_pb2.MultiBoxLossParameter.PER_PREDICTION:
        rest = (indices == -1) & present.any(1)
        eligible = np.where(table >= overlap_threshold, table, -1.0)
        best = eligible.argmax(1)
        best_overlap = eligible[np.arange(num_pred), best]
        take = rest & (best_overlap >= 0)
        indices[take], overlaps[take] = best[take], best_overlap[take]
    return indices, overlaps


def ground_truth(gt_blob, background_label_id, use_difficult):
    """The fork's GetGroundTruth: {item: (boxes (G, 4), labels (G,), difficult (G,))} from the
    (1, 1, G, 8) label blob of rows (item, label, instance, xmin, ymin, xmax, ymax, difficult);
    rows with item -1 are padding."""
    rows = gt_blob.reshape(-1, 8)
    out = {}
    for item in sorted(set(int(v) for v in rows[:, 0].tolist()) - {-1}):
        r = rows[rows[:, 0].long() == item]
        difficult = r[:, 7] != 0
        if not use_difficult:
            r, difficult = r[~difficult], difficult[~difficult]
        labels = r[:, 1].long()
        if bool((labels == background_label_id).any()):
            raise ValueError("found background label in the dataset")
        if r.shape[0]:
            out[item] = (r[:, 3:7], labels, difficult)
    return out
