"""Record the golden cases of the detection forks' layers with a fork's own pycaffe.

Run with the fork's pycaffe first on the path (a CPU build of weiliu89/caffe `ssd` or
rbgirshick/caffe-fast-rcnn `faster-rcnn`; see docs/forks/detection.md):

    PYTHONPATH=/opt/ssd/src/python python tests/golden_forks/record_detection.py ssd tests/golden_forks
    PYTHONPATH=/opt/frcnn/src/python python tests/golden_forks/record_detection.py frcnn tests/golden_forks

Each case folder has the format of ../shared/golden/layers (net.prototxt, weights.caffemodel,
phase, golden.npz with in/, out/, topdiff/, indiff/, param/, paramdiff/); tests/layers/
test_golden_forks.py runs them. This file imports only NumPy and the fork's caffe.
"""
import os
import sys
import tempfile

import numpy as np

rng = np.random.RandomState(1701)


def uniform(shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, shape).astype(np.float32)


def grid_priors(rows, cols, sizes, variance=(0.1, 0.1, 0.2, 0.2)):
    """(1, 2, P 4) priors: `sizes` (w, h) boxes centred on a rows x cols grid."""
    boxes = []
    for r in range(rows):
        for c in range(cols):
            cy, cx = (r + 0.5) / rows, (c + 0.5) / cols
            boxes += [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2] for w, h in sizes]
    boxes = np.array(boxes, np.float32)
    var = np.tile(np.array(variance, np.float32), (len(boxes), 1))
    return np.stack([boxes.ravel(), var.ravel()])[None]


def softmax_rows(x, classes):
    e = np.exp(x.reshape(x.shape[0], -1, classes))
    return (e / e.sum(-1, keepdims=True)).reshape(x.shape).astype(np.float32)


PRIORS = grid_priors(4, 4, [(0.3, 0.3), (0.45, 0.22), (0.22, 0.45)])     # 48 priors
GT = np.array([[0, 1, 0, 0.05, 0.1, 0.35, 0.45, 0], [0, 3, 0, 0.5, 0.45, 0.95, 0.9, 0],
               [0, 2, 1, 0.55, 0.05, 0.8, 0.3, 1], [1, 1, 0, 0.3, 0.25, 0.75, 0.7, 0]],
              np.float32).reshape(1, 1, -1, 8)
MB = ('propagate_down: true propagate_down: true propagate_down: false propagate_down: false '
      'loss_param { normalization: VALID } multibox_loss_param { num_classes: 4 '
      'share_location: true background_label_id: 0 %s }')


def multibox(params):
    return dict(type="MultiBoxLoss", param=MB % params, phase="TRAIN",
                params={"loc": uniform((2, 48 * 4), -0.5, 0.5),
                        "conf": uniform((2, 48 * 4), -2, 2)},
                inputs={"prior": PRIORS, "label": GT})


def detection_output(params, classes=4, share=True, n=2):
    loc_classes = 1 if share else classes
    return dict(type="DetectionOutput", phase="TEST",
                param="detection_output_param { num_classes: %d share_location: %s %s }"
                      % (classes, str(share).lower(), params),
                inputs={"loc": uniform((n, 48 * loc_classes * 4), -0.6, 0.6),
                        "conf": softmax_rows(uniform((n, 48 * classes), -3, 3), classes),
                        "prior": PRIORS})


DETS = np.array([[0, 1, 0.9, 0.06, 0.1, 0.34, 0.46], [0, 1, 0.8, 0.07, 0.12, 0.33, 0.44],
                 [0, 1, 0.3, 0.6, 0.6, 0.9, 0.9], [0, 3, 0.7, 0.52, 0.45, 0.93, 0.88],
                 [0, 2, 0.6, 0.56, 0.06, 0.8, 0.31], [1, 1, 0.95, 0.31, 0.26, 0.74, 0.71],
                 [1, 2, 0.5, 0.1, 0.1, 0.2, 0.2], [2, 3, 0.4, 0.1, 0.1, 0.5, 0.5]],
                np.float32).reshape(1, 1, -1, 7)

SSD_CASES = {
    "ssd_prior_box": dict(type="PriorBox", phase="TEST", inputs={
        "feat": uniform((1, 2, 3, 3)), "img": uniform((1, 3, 30, 30))},
        param="prior_box_param { min_size: 9 max_size: 20 aspect_ratio: 2 flip: true "
              "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }"),
    "ssd_prior_box_clip_step": dict(type="PriorBox", phase="TEST", inputs={
        "feat": uniform((1, 1, 4, 5))},
        param="prior_box_param { min_size: 10.7 aspect_ratio: 2 aspect_ratio: 3 flip: false "
              "clip: true img_h: 40 img_w: 48 step: 8 offset: 0.3 variance: 0.15 }"),
    "ssd_permute": dict(type="Permute", phase="TRAIN", force=True,
                        param="permute_param { order: 0 order: 2 order: 3 order: 1 }",
                        inputs={"x": uniform((2, 3, 4, 5))}),
    "ssd_permute_partial": dict(type="Permute", phase="TRAIN", force=True,
                                param="permute_param { order: 3 order: 1 }",
                                inputs={"x": uniform((2, 3, 4, 5))}),
    "ssd_normalize": dict(type="Normalize", phase="TRAIN", force=True, inputs={
        "x": uniform((2, 3, 4, 5))}, param='norm_param { across_spatial: true '
        'channel_shared: true scale_filler { type: "uniform" min: 1 max: 3 } }'),
    "ssd_normalize_channel": dict(type="Normalize", phase="TRAIN", force=True, inputs={
        "x": uniform((2, 3, 4, 5))}, param='norm_param { across_spatial: false '
        'channel_shared: false scale_filler { type: "gaussian" mean: 20 std: 5 } }'),
    "ssd_smooth_l1": dict(type="SmoothL1Loss", phase="TRAIN", param="",
                          params={"p": uniform((3, 8), -2, 2)}, inputs={"t": uniform((3, 8))}),
    # (A third, weight, bottom is in the fork's source but its layer refuses 3 bottoms.)
    "ssd_multibox": multibox("code_type: CENTER_SIZE mining_type: MAX_NEGATIVE "
                             "neg_pos_ratio: 3 overlap_threshold: 0.5 neg_overlap: 0.5"),
    "ssd_multibox_none_logistic": multibox("code_type: CENTER_SIZE mining_type: NONE "
                                           "conf_loss_type: LOGISTIC"),
    "ssd_multibox_hard_example": multibox("code_type: CENTER_SIZE mining_type: HARD_EXAMPLE "
                                          "sample_size: 10 loc_weight: 2"),
    "ssd_multibox_bipartite_l2": multibox("code_type: CORNER match_type: BIPARTITE "
                                          "loc_loss_type: L2 use_difficult_gt: false "
                                          "mining_type: MAX_NEGATIVE neg_pos_ratio: 2"),
    "ssd_detection_output": detection_output(
        "code_type: CENTER_SIZE background_label_id: 0 confidence_threshold: 0.1 keep_top_k: 7 "
        "nms_param { nms_threshold: 0.45 top_k: 20 }"),
    "ssd_detection_output_noshare": detection_output(
        "code_type: CORNER background_label_id: 0 confidence_threshold: 0.2 "
        "nms_param { nms_threshold: 0.3 }", share=False, n=1),
    "ssd_detection_output_eta": detection_output(
        "code_type: CENTER_SIZE background_label_id: 0 confidence_threshold: 0.05 "
        "variance_encoded_in_target: true nms_param { nms_threshold: 0.7 eta: 0.8 top_k: 30 }"),
    "ssd_detection_evaluate": dict(type="DetectionEvaluate", phase="TEST",
                                   param="detection_evaluate_param { num_classes: 4 "
                                         "background_label_id: 0 overlap_threshold: 0.5 }",
                                   inputs={"det": DETS, "gt": GT}),
    "ssd_detection_evaluate_difficult": dict(
        type="DetectionEvaluate", phase="TEST", inputs={"det": DETS, "gt": GT},
        param="detection_evaluate_param { num_classes: 4 background_label_id: 0 "
              "overlap_threshold: 0.3 evaluate_difficult_gt: false }"),
}

ROIS = np.array([[0, 0, 0, 30, 20], [1, 8, 12, 50, 50], [0, 22, 5, 26, 9], [1, -10, -10, 90, 90],
                 [0, 13, 13, 13, 13], [1, 40, 2, 63, 47]], np.float32)
FRCNN_CASES = {
    "frcnn_roi_pooling": dict(type="ROIPooling", phase="TEST", legacy=True,
                              param="roi_pooling_param { pooled_h: 3 pooled_w: 4 "
                                    "spatial_scale: 0.25 }",
                              inputs={"x": uniform((2, 3, 12, 16)), "rois": ROIS}),
    "frcnn_roi_pooling_6x6": dict(type="ROIPooling", phase="TEST", legacy=True,
                                  param="roi_pooling_param { pooled_h: 6 pooled_w: 6 "
                                        "spatial_scale: 0.0625 }",
                                  inputs={"x": uniform((2, 2, 5, 6)),
                                          "rois": ROIS * [1, 4, 4, 4, 4]}),
    "frcnn_dropout_scale_train": dict(type="Dropout", phase="TEST", legacy=True, force=True,
                                      param="dropout_param { dropout_ratio: 0.3 "
                                            "scale_train: false }",
                                      inputs={"x": uniform((2, 5))}),
}


def net_text(name, case):
    inputs, params = case.get("inputs", {}), case.get("params", {})
    lines = [f'name: "{name}"']
    if case.get("force"):
        lines.append("force_backward: true")
    for blob, value in inputs.items():
        dims = " ".join(f"dim: {d}" for d in value.shape)
        if case.get("legacy"):      # caffe-fast-rcnn predates the Input layer
            lines.append(f'input: "{blob}" input_shape {{ {dims} }}')
        else:
            lines.append(f'layer {{ name: "in_{blob}" type: "Input" top: "{blob}" '
                         f'input_param {{ shape {{ {dims} }} }} }}')
    for blob, value in params.items():
        dims = " ".join(f"dim: {d}" for d in value.shape)
        lines.append(f'layer {{ name: "in_{blob}" type: "Parameter" top: "{blob}" '
                     f'parameter_param {{ shape {{ {dims} }} }} }}')
    bottoms = list(params) + list(inputs)
    if case["type"] == "MultiBoxLoss":
        bottoms = ["loc", "conf", "prior", "label"]
    elif case["type"] == "DetectionOutput":
        bottoms = ["loc", "conf", "prior"]
    bottom = " ".join(f'bottom: "{b}"' for b in bottoms)
    lines.append(f'layer {{ name: "layer" type: "{case["type"]}" {bottom} top: "t0" '
                 f'{case["param"]} }}')
    return "\n".join(lines) + "\n"


def record(name, case, out_dir):
    import caffe
    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "net.prototxt"), "w") as f:
        f.write(net_text(name, case))
    with open(os.path.join(folder, "phase"), "w") as f:
        f.write(case["phase"] + "\n")
    phase = caffe.TRAIN if case["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net(os.path.join(folder, "net.prototxt"), phase)
    golden = {}
    for blob, value in case.get("inputs", {}).items():
        net.blobs[blob].data[...] = value
        golden[f"in/{blob}"] = value
    for blob, value in case.get("params", {}).items():
        net.params[f"in_{blob}"][0].data[...] = value
        golden[f"in/{blob}"] = value
    net.save(os.path.join(folder, "weights.caffemodel"))
    net.forward()
    golden["out/t0"] = net.blobs["t0"].data.copy()
    if case["phase"] == "TRAIN":
        top = net.blobs["t0"]
        if top.data.size > 1 or case["type"] not in ("SmoothL1Loss", "MultiBoxLoss"):
            top.diff[...] = uniform(top.data.shape)
        golden["topdiff/t0"] = top.diff.copy()
        for blobs in net.params.values():
            for b in blobs:
                b.diff[...] = 0
        net.backward()
        for blob in case.get("params", {}):
            # The Parameter layer's top, not its learned blob: MultiBoxLoss without mining
            # hands its gradient over by re-pointing the bottom's diff (ShareDiff), which the
            # learned blob does not see.
            golden[f"indiff/{blob}"] = net.blobs[blob].diff.copy()
        if case.get("force"):
            for blob in case.get("inputs", {}):
                golden[f"indiff/{blob}"] = net.blobs[blob].diff.copy()
        for i, b in enumerate(net.params.get("layer", [])):
            golden[f"param/{i}"] = b.data.copy()
            golden[f"paramdiff/{i}"] = b.diff.copy()
    np.savez(os.path.join(folder, "golden.npz"), **golden)
    print(name, {k: v.shape for k, v in golden.items()})


def main(argv):
    fork, out_dir = argv[1], argv[2]
    cases = SSD_CASES if fork == "ssd" else FRCNN_CASES
    only = set(argv[3:])
    for name, case in cases.items():
        if not only or name in only:
            record(name, case, out_dir)


if __name__ == "__main__":
    os.environ.setdefault("GLOG_minloglevel", "2")
    tempfile.tempdir = None
    main(sys.argv)
