"""eric612/MobileNet-YOLO's Yolov3DetectionOutput against its loop, written out per element."""
import math

import pytest
import torch

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import make_layer, random_blob

PARAM = """type: "Yolov3DetectionOutput" yolov3_detection_output_param {{
  num_classes: 2 num_box: 2 confidence_threshold: {thr} nms_threshold: 0.45
  biases: 10 biases: 14 biases: 23 biases: 27 biases: 37 biases: 58 biases: 81 biases: 82
  anchors_scale: 32 anchors_scale: 16 mask_group_num: 2 mask: 2 mask: 3 mask: 0 mask: 1 }}"""


def sig(v):
    return 1 / (1 + math.exp(-v))


def fork_detections(bottoms, thr, nms=0.45):
    biases = [10, 14, 23, 27, 37, 58, 81, 82]
    masks, scales, preds = [2, 3, 0, 1], [32, 16], []
    for t, x in enumerate(bottoms):
        n, c, h, w = x.shape
        for b in range(n):
            for s in range(h * w):
                row, col = divmod(s, w)
                for a in range(2):
                    v = [float(x[b, a * 7 + k, row, col]) for k in range(7)]
                    m = masks[a + 2 * t]
                    box = ((col + sig(v[0])) / w, (row + sig(v[1])) / h,
                           math.exp(v[2]) * biases[2 * m] / (w * scales[t]),
                           math.exp(v[3]) * biases[2 * m + 1] / (h * scales[t]))
                    for k in range(2):
                        score = sig(v[5 + k]) * sig(v[4])
                        if score > thr:
                            preds.append((box, k, score))
    return nms_rows(preds, nms)


def run(layer, bottom):
    top = Blob((), torch.float64, bottom[0].device)
    layer.layer_setup(bottom, [top])
    layer.forward(bottom, [top])
    return top.data


@pytest.mark.parametrize("thr", [0.3, 0.6])
def test_yolov3_detection_output_matches_the_fork_loop(device, thr):
    gen = torch.Generator().manual_seed(2)
    bottoms = [random_blob((1, 14, 2, 2), -3, 3, device=device, generator=gen),
               random_blob((1, 14, 4, 4), -3, 3, device=device, generator=gen)]
    out = run(make_layer(PARAM.format(thr=thr), device=device), bottoms)
    expected = torch.tensor(fork_detections([b.data.cpu() for b in bottoms], thr),
                            dtype=torch.float64)
    assert len(expected) > 1                        # the case exercises NMS and sorting
    torch.testing.assert_close(out[0, 0].cpu(), expected)


def test_yolov3_detection_output_without_detections(device):
    bottoms = [random_blob((2, 14, 2, 2), -9, -8, device=device),
               random_blob((2, 14, 4, 4), -9, -8, device=device)]
    out = run(make_layer(PARAM.format(thr=0.5), device=device), bottoms)
    expected = torch.full((2, 7), -1.0, dtype=torch.float64)
    expected[:, 0] = torch.tensor([0.0, 1.0])
    torch.testing.assert_close(out[0, 0].cpu(), expected)


def test_yolov3_detection_output_checks_its_bottoms():
    with pytest.raises(LayerSetupError, match="mask_group_num"):
        run(make_layer(PARAM.format(thr=0.5)), [random_blob((1, 14, 2, 2))])
    with pytest.raises(LayerSetupError, match="num_box"):
        run(make_layer(PARAM.format(thr=0.5)),
            [random_blob((1, 12, 2, 2)), random_blob((1, 14, 4, 4))])


V2 = """type: "YoloDetectionOutput" yolo_detection_output_param {{ num_classes: 3 num_box: 2
  confidence_threshold: {thr} nms_threshold: 0.45 biases: 1.08 biases: 1.19 biases: 3.42
  biases: 4.41 }}"""


def fork_v2_detections(bottoms, thr, nms=0.45):
    """eric612's yolo_detection_output_layer.cpp: per cell and anchor, the best class of a
    softmax, score = sigmoid(objectness) * its probability, kept if >= threshold."""
    biases, preds = [1.08, 1.19, 3.42, 4.41], []
    for x in bottoms:
        side = x.shape[3]
        for b in range(x.shape[0]):
            for j in range(side):
                for i in range(side):
                    for n in range(2):
                        v = [float(x[b, n * 8 + k, j, i]) for k in range(8)]
                        e = [math.exp(c - max(v[5:])) for c in v[5:]]
                        probs = [c / sum(e) for c in e]
                        k = probs.index(max(probs))
                        score = sig(v[4]) * probs[k]
                        if score >= thr:
                            preds.append((((i + sig(v[0])) / side, (j + sig(v[1])) / side,
                                           math.exp(v[2]) * biases[2 * n] / side,
                                           math.exp(v[3]) * biases[2 * n + 1] / side), k, score))
    return nms_rows(preds, nms)


def nms_rows(preds, nms):
    preds.sort(key=lambda p: -p[2])

    def iou(a, b):
        def ov(i):
            return min(a[i] + a[i + 2] / 2, b[i] + b[i + 2] / 2) - \
                max(a[i] - a[i + 2] / 2, b[i] - b[i + 2] / 2)
        ow, oh = ov(0), ov(1)
        inter = 0 if ow < 0 or oh < 0 else ow * oh
        return inter / (a[2] * a[3] + b[2] * b[3] - inter)
    dropped = set()
    for i in range(len(preds)):
        for j in range(i + 1, len(preds)):
            if i not in dropped and j not in dropped and iou(preds[i][0], preds[j][0]) >= nms:
                dropped.add(j)
    return [[0, k + 1, s, x - w / 2, y - h / 2, x + w / 2, y + h / 2]
            for i, ((x, y, w, h), k, s) in enumerate(preds) if i not in dropped]


@pytest.mark.parametrize("two", [False, True])
def test_yolo_detection_output_matches_the_fork_loop(device, two):
    gen = torch.Generator().manual_seed(5)
    bottoms = [random_blob((1, 16, 3, 3), -3, 3, device=device, generator=gen)]
    if two:
        bottoms.append(random_blob((1, 16, 5, 5), -3, 3, device=device, generator=gen))
    out = run(make_layer(V2.format(thr=0.2), device=device), bottoms)
    expected = torch.tensor(fork_v2_detections([b.data.cpu() for b in bottoms], 0.2),
                            dtype=torch.float64)
    assert len(expected) > 1
    torch.testing.assert_close(out[0, 0].cpu(), expected)


def test_yolo_detection_output_refuses_other_coords():
    with pytest.raises(LayerSetupError, match="coords must be 4"):
        run(make_layer(V2.format(thr=0.2).replace("num_box: 2", "num_box: 2 coords: 5")),
            [random_blob((1, 18, 3, 3))])
