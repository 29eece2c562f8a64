"""tests/ranked.py, the set comparison of ranked outputs: it accepts exactly the reorderings
that near-equal scores allow and refuses every other difference."""
import numpy as np
import pytest

from tests.ranked import assert_same_detections, match_rows


def detections(seed=0, n=12):
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 7))
    rows[:, 1] = rng.integers(1, 4, n)
    rows[:, 2] = np.sort(rng.uniform(0.1, 0.9, n))[::-1]
    rows[:, 3:5] = rng.uniform(0, 0.5, (n, 2))
    rows[:, 5:] = rows[:, 3:5] + rng.uniform(0.1, 0.5, (n, 2))
    return rows


def test_the_same_rows_in_another_order_across_labels_are_the_same_set():
    ours = detections()
    theirs = ours[np.lexsort((-ours[:, 2], ours[:, 1]))]   # by label first, as the SSD fork
    pairs = assert_same_detections(ours, theirs, tol=1e-6)
    assert np.array_equal(theirs[pairs[:, 1]], ours[pairs[:, 0]])


def test_near_equal_scores_may_swap_and_their_boxes_pair_correctly():
    # The case of issue 30: two boxes of one class within 7e-7 ranked oppositely.
    ours = detections()
    ours[4, 1] = ours[5, 1] = 14
    ours[5, 2] = ours[4, 2] - 7e-7
    theirs = ours[[0, 1, 2, 3, 5, 4, 6, 7, 8, 9, 10, 11]].copy()
    theirs[:, 3:] += 1e-6
    pairs = assert_same_detections(ours, theirs, tol=1e-5)
    assert sorted(map(tuple, pairs[4:6].tolist())) == [(4, 5), (5, 4)]


def test_scores_apart_in_opposite_order_fail():
    ours = detections()
    ours[2, 1] = ours[6, 1] = 2
    order = list(range(12))
    order[2], order[6] = 6, 2
    with pytest.raises(AssertionError, match="opposite order"):
        assert_same_detections(ours, ours[order], tol=1e-5)


@pytest.mark.parametrize("column, delta", [(1, 1.0), (2, 1e-3), (6, 1e-3)])
def test_another_label_score_or_box_fails(column, delta):
    ours = detections()
    theirs = ours.copy()
    theirs[3, column] += delta
    with pytest.raises(AssertionError, match="no partner"):
        assert_same_detections(ours, theirs, tol=1e-5)


def test_a_cut_between_near_equal_scores_may_keep_either_row():
    ours = detections()
    theirs = ours.copy()
    theirs[-1, 3:] = [0.7, 0.7, 0.9, 0.9]
    theirs[-1, 2] += 1e-7
    assert len(match_rows(ours, theirs, tol=1e-5, keys=(0, 1), score=2)) == len(ours) - 1
    theirs[-1, 2] += 1e-3   # no longer a tie at the cut: another detection
    with pytest.raises(AssertionError, match="no partner"):
        match_rows(ours, theirs, tol=1e-5, keys=(0, 1), score=2)
    with pytest.raises(AssertionError, match="no partner"):   # rows in the middle never
        match_rows(ours[:-1], np.delete(theirs, 3, 0), tol=1e-5, keys=(0, 1), score=2)


def test_rows_without_their_scores_are_ordered_by_ours():
    # OpenCV's Proposal gives boxes alone: our scores decide which swaps are ties.
    ours = detections()[:, 3:]
    scores = np.array([0.9, 0.8, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02])
    assert len(match_rows(ours, ours[[0, 2, 1] + list(range(3, 12))], tol=1e-6,
                          ranked_by=scores)) == 12
    with pytest.raises(AssertionError, match="opposite order"):
        match_rows(ours, ours[[0, 1, 3, 2] + list(range(4, 12))], tol=1e-6, ranked_by=scores)


def test_a_score_at_the_confidence_threshold_may_be_kept_by_one_output_alone():
    ours = detections()
    ours[-1, 2] = 0.25 + 1e-7
    assert len(assert_same_detections(ours, ours[:-1], tol=1e-5, threshold=0.25)) == 11
    with pytest.raises(AssertionError, match="no partner"):     # not at the threshold
        assert_same_detections(ours, ours[:-1], tol=1e-5, threshold=0.2)
    with pytest.raises(AssertionError, match="no partner"):     # a row in the middle
        assert_same_detections(ours, np.delete(ours, 3, 0), tol=1e-5, threshold=0.25)
