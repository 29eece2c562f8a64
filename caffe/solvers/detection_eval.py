"""SSD's detection test: mean average precision from DetectionEvaluate rows (eval_type).

With `eval_type: "detection"` in the solver (weiliu89/caffe's Solver::TestDetection), each test
net output is a DetectionEvaluate blob of 1 x 1 x N x 5 rows: (-1, label, positives, -1, -1)
counts a label's ground-truth boxes in the batch, (item, label, score, tp, fp) is one
detection. Over test_iter batches the rows are pooled per output and label; each label's AP is
computed by `ap_version` ("11point": VOC2007's, "MaxIntegral": VOC2012's / ILSVRC's,
"Integral": the natural integral), and the output's value is their mean over the labels that
had positives. The log lines are the fork's, so its log parsers read them.
"""
import logging
from collections import defaultdict

import numpy as np

from ..errors import SolverError
from ..log_text import printable
from .debug_info import fmt
from .signals import serve_requests

log = logging.getLogger("caffe.solver")

EVAL_TYPES = ("classification", "detection")
AP_VERSIONS = ("11point", "MaxIntegral", "Integral")
_EPS = np.float32(1e-6)       # the fork's float eps


def check_eval(param):
    if param.eval_type not in EVAL_TYPES:
        raise SolverError(f"unknown eval_type '{param.eval_type}' (known: "
                          f"{', '.join(EVAL_TYPES)})")
    if param.eval_type == "detection" and param.ap_version not in AP_VERSIONS:
        raise SolverError(f"unknown ap_version '{param.ap_version}' (known: "
                          f"{', '.join(AP_VERSIONS)})")


def average_precision(tp, fp, num_pos, ap_version="Integral"):
    """AP of one label from [(score, tp)] and [(score, fp)] (SSD's ComputeAP, in float32)."""
    if not tp or num_pos == 0:
        return 0.0
    # A stable sort by descending score, each list on its own, as the fork sorts them.
    def cumsum(pairs):
        order = sorted(range(len(pairs)), key=lambda i: -pairs[i][0])
        return np.cumsum([pairs[i][1] for i in order])
    tp_sum, fp_sum = cumsum(tp), cumsum(fp)
    # float / int in C++: the division is float32's.
    prec = tp_sum.astype(np.float32) / (tp_sum + fp_sum).astype(np.float32)
    rec = tp_sum.astype(np.float32) / np.float32(num_pos)
    ap = np.float32(0)
    if ap_version == "11point":
        max_precs = [np.float32(0)] * 11
        start = len(tp) - 1
        for j in range(10, -1, -1):
            for i in range(start, -1, -1):
                if rec[i] < j / 10:
                    start = i
                    if j > 0:
                        max_precs[j - 1] = max_precs[j]
                    break
                max_precs[j] = max(max_precs[j], prec[i])
        for j in range(10, -1, -1):
            ap += max_precs[j] / np.float32(11)
    elif ap_version == "MaxIntegral":
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(len(tp) - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(cur_rec - rec[i]) > _EPS:
                ap += cur_prec * abs(cur_rec - rec[i])
            cur_rec = rec[i]
        ap += cur_rec * cur_prec
    else:
        prev = np.float32(0)
        for i in range(len(tp)):
            if abs(rec[i] - prev) > _EPS:
                ap += prec[i] * abs(rec[i] - prev)
            prev = rec[i]
    return float(ap)


def test_detection(solver, test_net_id=0):
    """Solver.test for eval_type "detection": [(output name, mAP)] of one test net."""
    p = solver.param
    log.info("Iteration %d, Testing net (#%d)", solver.iter, test_net_id)
    net = solver.test_nets[test_net_id]
    net.share_trained_layers_with(solver.net)
    true_pos = defaultdict(lambda: defaultdict(list))
    false_pos = defaultdict(lambda: defaultdict(list))
    num_pos = defaultdict(lambda: defaultdict(int))
    loss = 0.0
    for _ in range(p.test_iter[test_net_id]):
        if serve_requests(solver):
            log.info("Test interrupted.")
            return []
        iter_loss = net.forward_prefilled()
        if p.test_compute_loss:
            loss += float(iter_loss)
        for j, bid in enumerate(net.output_ids):
            blob = net._blobs[bid]
            if blob.shape[-1:] != (5,):
                raise SolverError(f"eval_type detection: test net output "
                                  f"'{net._blob_names[bid]}' has shape {blob.shape}, not "
                                  f"DetectionEvaluate's rows of 5")
            for item, label, score, tp, fp in blob.data.reshape(-1, 5).double().cpu().tolist():
                label = int(label)
                if int(item) == -1:          # a label's count of ground-truth boxes
                    num_pos[j][label] += int(score)
                elif int(tp) or int(fp):     # neither: matched a difficult box, not scored
                    true_pos[j][label].append((np.float32(score), int(tp)))
                    false_pos[j][label].append((np.float32(score), int(fp)))
    if p.test_compute_loss:
        log.info("Test loss: %s", fmt(loss / max(p.test_iter[test_net_id], 1)))
    scores = []
    for j, bid in enumerate(net.output_ids):
        if j not in true_pos:
            continue                    # as the fork: an output without detections logs none
        total = np.float32(0)
        for label, count in sorted(num_pos[j].items()):
            if label not in true_pos[j]:
                log.warning("Missing true_pos for label: %d", label)
                continue
            ap = average_precision(true_pos[j][label], false_pos[j][label], count,
                                   p.ap_version)
            total += np.float32(ap)
            if p.show_per_class_result:
                log.info("class%d: %s", label, fmt(ap))
        mean_ap = float(total / np.float32(len(num_pos[j]))) if num_pos[j] else 0.0
        name = net._blob_names[bid]
        log.info("    Test net output #%d: %s = %s", j, printable(name), fmt(mean_ap))
        scores.append((name, mean_ap))
    solver.mean_scores[test_net_id] = scores
    for logger in solver.loggers:
        logger.on_test(solver, test_net_id, scores)
    return scores
