"""Comparing ranked outputs (detections, proposals, top-k rows) as sets.

Two implementations that rank by a float score may order two near-equal scores either way,
and which way can change with the CPU (another SIMD path rounds the last bit differently). So
rows are paired by content, not by position: rows with the same key columns (image, label)
whose every column agrees within the tolerance. Order still counts where the scores are
apart: two rows of the same key may appear in opposite order in the two outputs only when
their scores are within `tie` of each other. A cut (keep_top_k, post_nms_topn) may fall
between near-equal scores too, so a row may go unpaired only when its score is within `tie`
of the lowest score kept by either output, and both outputs leave the same number unpaired.
"""
import numpy as np
from scipy.optimize import linear_sum_assignment

# DetectionOutput rows: image, label, score, xmin, ymin, xmax, ymax.
DETECTION_KEYS, DETECTION_SCORE = (0, 1), 2


def match_rows(ours, theirs, *, tol, keys=(), score=None, tie=None, ordered=True,
               ranked_by=None, threshold=None):
    """Pairs (i, j): ours[i] equals theirs[j] within `tol` and in the `keys` columns exactly.
    `tol`: absolute, a number or an array that broadcasts to theirs (atol + rtol |theirs|);
    `score`: the column the rows are ranked by; `ranked_by`: our rows' scores instead, for
    rows that do not carry theirs (OpenCV's Proposal gives rois alone) - then only the order
    is checked with them; `tie`: how near two scores are to be equal (default: the score
    column's tolerance, 0 with `ranked_by`); `threshold`: a score cut (confidence_threshold)
    that a row within `tie` of it may fall on either side of, in one output alone.
    Fails the test, naming the first row without a partner, when the outputs are not the
    same set under the rules of this module's docstring."""
    ours, theirs = (np.asarray(a, np.float64) for a in (ours, theirs))
    assert ours.ndim == theirs.ndim == 2 and ours.shape[1] == theirs.shape[1], \
        f"row shapes differ: {ours.shape} vs {theirs.shape}"
    tol = np.broadcast_to(np.asarray(tol, np.float64), theirs.shape)
    if tie is None and score is not None:
        tie = tol[:, score].max(initial=0.0)
    # Distances in units of the tolerance: a pair is a match where it is at most 1.
    distance = (np.abs(ours[:, None, :] - theirs[None, :, :]) / tol[None]).max(-1, initial=0.0)
    for k in keys:
        distance[ours[:, None, k] != theirs[None, :, k]] = np.inf
    # The assignment with the smallest total distance; an infeasible pair costs more than
    # any feasible set of pairs, so it is chosen only where no partner exists.
    cost = np.where(distance <= 1, distance, 1e6)
    rows, cols = linear_sum_assignment(cost) if cost.size else (np.zeros(0, int),) * 2
    good = cost[rows, cols] <= 1
    pairs = np.stack([rows[good], cols[good]], 1)
    lone_ours = np.setdiff1d(np.arange(len(ours)), pairs[:, 0])
    lone_theirs = np.setdiff1d(np.arange(len(theirs)), pairs[:, 1])
    if threshold is not None and score is not None:
        lone_ours = lone_ours[np.abs(ours[lone_ours, score] - threshold) > tie]
        lone_theirs = lone_theirs[np.abs(theirs[lone_theirs, score] - threshold) > tie]
    if len(lone_ours) or len(lone_theirs):
        at_cut = score is not None and _at_cut(ours, theirs, lone_ours, lone_theirs, score, tie)
        assert len(lone_ours) == len(lone_theirs) and at_cut, (
            f"{len(lone_ours)} of {len(ours)} rows have no partner within the tolerance "
            f"(max {tol.max(initial=0.0):.3g}), first {ours[lone_ours[:1]].tolist()}; "
            f"of theirs {len(lone_theirs)}, first {theirs[lone_theirs[:1]].tolist()}")
    if ranked_by is not None:
        ours, score = np.column_stack([ours, ranked_by]), ours.shape[1]
        tie = 0.0 if tie is None else tie
    if ordered and score is not None and len(pairs) > 1:
        _assert_order(ours, pairs, keys, score, tie)
    return pairs


def _at_cut(ours, theirs, lone_ours, lone_theirs, score, tie):
    """True when every unpaired row sits at the cut (the lowest kept score, within tie)."""
    cut = min(ours[:, score].min(initial=np.inf), theirs[:, score].min(initial=np.inf))
    lone = np.concatenate([ours[lone_ours, score], theirs[lone_theirs, score]])
    return bool((lone <= cut + tie).all())


def _assert_order(ours, pairs, keys, score, tie):
    """Rows of one key in opposite order in the two outputs must have scores within `tie`."""
    pairs = pairs[np.argsort(pairs[:, 0])]
    position, s = pairs[:, 1], ours[pairs[:, 0], score]
    swapped = (position[:, None] > position[None, :]) & np.triu(np.ones((len(s),) * 2, bool), 1)
    for k in keys:
        swapped &= ours[pairs[:, 0], None, k] == ours[None, pairs[:, 0], k]
    apart = np.abs(s[:, None] - s[None, :]) > tie
    bad = np.argwhere(swapped & apart)
    assert not len(bad), (
        f"rows {pairs[bad[0][0], 0]} and {pairs[bad[0][1], 0]} (scores "
        f"{s[bad[0][0]]:.7g}, {s[bad[0][1]]:.7g}) are in opposite order in the other output")


def assert_same_detections(ours, theirs, tol, threshold=None, ordered=True):
    """DetectionOutput rows (N x 7, any leading shape) are the same set of detections, in
    the same order within each image and label wherever scores are apart (OpenCV orders by
    score alone, the SSD fork by label first: only the order within a label is shared).
    `threshold`: the layer's confidence_threshold (a score at it may go either way)."""
    ours, theirs = np.asarray(ours).reshape(-1, 7), np.asarray(theirs).reshape(-1, 7)
    return match_rows(ours, theirs, tol=tol, keys=DETECTION_KEYS, score=DETECTION_SCORE,
                      ordered=ordered, threshold=threshold)
