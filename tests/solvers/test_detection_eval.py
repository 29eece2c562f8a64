"""SSD's eval_type "detection": mAP over DetectionEvaluate rows, by each ap_version."""
import logging

import numpy as np
import pytest
import torch

from caffe.solvers import SolverError
from caffe.solvers.detection_eval import average_precision
from tests.solvers.nets import PARAM_NET, make_solver

# Four detections of one label with 3 ground-truth boxes: tp, fp, tp, fp by descending score.
# precision 1, 1/2, 2/3, 1/2 at recall 1/3, 1/3, 2/3, 2/3.
TP = [(0.9, 1), (0.8, 0), (0.7, 1), (0.6, 0)]
FP = [(0.9, 0), (0.8, 1), (0.7, 0), (0.6, 1)]


@pytest.mark.parametrize("version, expected", [
    ("Integral", 1 / 3 + 2 / 3 * 1 / 3),          # the area under the curve's steps
    ("MaxIntegral", 1 / 3 + 2 / 3 * 1 / 3),       # the same here: precision never rises
    ("11point", (4 * 1 + 3 * 2 / 3) / 11),        # recall >= 0 .. 0.3: 1; 0.4 .. 0.6: 2/3
])
def test_average_precision_by_hand(version, expected):
    assert average_precision(TP, FP, 3, version) == pytest.approx(expected, abs=1e-6)


def test_max_integral_takes_the_best_precision_to_the_right():
    # fp then tp: precision 0, 1/2 at recall 0, 1/2 (of 2 positives).
    tp, fp = [(0.9, 0), (0.8, 1)], [(0.9, 1), (0.8, 0)]
    assert average_precision(tp, fp, 2, "Integral") == pytest.approx(0.25)
    assert average_precision(tp, fp, 2, "MaxIntegral") == pytest.approx(0.25)
    # Precision rising later (0, 1/2, 2/3) lifts the earlier recall steps in MaxIntegral only.
    tp, fp = [(0.9, 0), (0.8, 1), (0.7, 1)], [(0.9, 1), (0.8, 0), (0.7, 0)]
    assert average_precision(tp, fp, 2, "Integral") == pytest.approx(0.5 * 0.5 + 2 / 3 * 0.5)
    assert average_precision(tp, fp, 2, "MaxIntegral") == pytest.approx(2 / 3)


def test_sorting_is_by_score_and_empty_cases_are_zero():
    shuffled = [TP[i] for i in (2, 0, 3, 1)], [FP[i] for i in (2, 0, 3, 1)]
    assert average_precision(*shuffled, 3) == average_precision(TP, FP, 3)
    assert average_precision([], [], 3) == 0 and average_precision(TP, FP, 0) == 0


EVAL_NET = """name: "eval"
layer { name: "det" type: "Input" top: "det" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 7 } } }
layer { name: "gt" type: "Input" top: "gt" input_param { shape { dim: 1 dim: 1 dim: 3 dim: 8 } } }
layer { name: "detection_eval" type: "DetectionEvaluate" bottom: "det" bottom: "gt"
        top: "detection_eval"
        detection_evaluate_param { num_classes: 3 background_label_id: 0
                                   overlap_threshold: 0.5 } }
"""


def detection_solver(extra="", net_text=EVAL_NET):
    solver = make_solver(f'base_lr: 0.01 lr_policy: "fixed" test_iter: 2 test_interval: 1000 '
                         f'eval_type: "detection" {extra} test_net_param {{ {net_text} }}',
                         net=PARAM_NET, dtype=torch.float32)
    net = solver.test_nets[0]
    # Ground truth: two boxes of label 1, one of label 2. Detections: label 1 hits its first
    # box (0.9) and misses (0.8); label 2 hits (0.7).
    net.blobs["gt"].data[0, 0] = [[0, 1, 0, 0, 0, 0.5, 0.5, 0], [0, 1, 1, 0.5, 0.5, 1, 1, 0],
                                  [0, 2, 0, 0, 0.5, 0.5, 1, 0]]
    net.blobs["det"].data[0, 0] = [[0, 1, 0.9, 0, 0, 0.5, 0.5], [0, 1, 0.8, 0.6, 0, 0.9, 0.3],
                                   [0, 2, 0.7, 0, 0.5, 0.5, 1]]
    return solver


def test_solver_logs_the_mean_ap(caplog):
    solver = detection_solver('ap_version: "Integral" show_per_class_result: true')
    with caplog.at_level(logging.INFO, logger="caffe.solver"):
        scores = solver.test_all()
    # Two batches: label 1 has 4 positives, tp 1 1 0 0 by score: AP 1/2; label 2: AP 1.
    assert scores == [[("detection_eval", pytest.approx(0.75))]]
    assert "    Test net output #0: detection_eval = 0.75" in caplog.text
    assert "class1: 0.5" in caplog.text and "class2: 1" in caplog.text


def test_a_label_without_detections_counts_as_zero(caplog):
    solver = detection_solver()
    net = solver.test_nets[0]
    net.blobs["det"].data[0, 0, 2] = -1         # DetectionOutput's empty row: label 2 finds none
    with caplog.at_level(logging.INFO, logger="caffe.solver"):
        scores = solver.test_all()
    assert scores == [[("detection_eval", pytest.approx(0.25))]]
    assert "Missing true_pos for label: 2" in caplog.text


def test_bad_eval_settings_are_named():
    with pytest.raises(SolverError, match="unknown eval_type 'detect'"):
        make_solver('base_lr: 0.01 lr_policy: "fixed" eval_type: "detect"', net=PARAM_NET)
    with pytest.raises(SolverError, match="unknown ap_version 'VOC'"):
        make_solver('base_lr: 0.01 lr_policy: "fixed" eval_type: "detection" '
                    'ap_version: "VOC"', net=PARAM_NET)


def test_outputs_that_are_not_rows_of_5_are_refused():
    extra = 'layer { name: "extra" type: "Input" top: "extra" input_param { shape { dim: 2 } } }'
    solver = detection_solver(net_text=EVAL_NET + extra)
    with pytest.raises(SolverError, match="'extra' has shape"):
        solver.test_all()


def voc_ap(rec, prec, use_07_metric):
    """The PASCAL VOC devkit's AP (2007: 11 points; 2010 on: the precision envelope's area)."""
    if use_07_metric:
        return sum(max(prec[rec >= t], default=0) for t in np.arange(0, 1.1, 0.1)) / 11
    mrec, mpre = np.r_[0, rec, 1], np.r_[0, prec, 0]
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_the_voc_devkit(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    hits = rng.random(n) < 0.5
    scores = rng.permutation(n) / n + 0.01          # distinct, so the order is unambiguous
    tp = [(float(s), int(h)) for s, h in zip(scores, hits)]
    fp = [(float(s), int(not h)) for s, h in zip(scores, hits)]
    num_pos = int(hits.sum()) + int(rng.integers(0, 5)) or 1
    order = np.argsort(-scores, kind="stable")
    cum = np.cumsum(hits[order])
    rec, prec = cum / num_pos, cum / np.arange(1, n + 1)
    assert average_precision(tp, fp, num_pos, "11point") == pytest.approx(
        voc_ap(rec, prec, True), abs=1e-5)
    assert average_precision(tp, fp, num_pos, "MaxIntegral") == pytest.approx(
        voc_ap(rec, prec, False), abs=1e-5)
