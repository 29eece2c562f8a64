"""R-CNN-style detection: classify warped windows with a CNN, then non-maximum suppression.

    python examples/rcnn_detection/detect.py [--iters 800] [--out rcnn_out]

R-CNN (BVLC's detection example, bvlc_reference_rcnn_ilsvrc13 in `caffe zoo`) scores
region proposals by warping each to the net's input and running a classifier over them,
which caffe.Detector.detect_windows does. Here the scenes are 96 x 96 images of squares and
discs; the classifier is trained on warped ground-truth boxes (jittered, IoU >= 0.6) and on
background windows (IoU < 0.3), proposals are sliding windows of four sizes (a stand-in
for Selective Search, which needs MATLAB), and per-class NMS keeps the best boxes.
Precision and recall at IoU 0.5 on new scenes are printed, with a few detections.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from training import make_solver, train  # noqa: E402

CLASSES = ("background", "square", "disc")
SIZE, CROP = 96, 24
SOLVER = ('type: "Adam" base_lr: 0.001 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
          'weight_decay: 0.0005 display: 100 random_seed: 1701')


def scenes(n, seed=0):
    """(H x W x 3 images in [0, 1], [(ymin, xmin, ymax, xmax, class)] boxes each)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    images, boxes = [], []
    for _ in range(n):
        im = 0.4 + 0.1 * np.sin(xx / rng.uniform(3, 8))[..., None] + \
            rng.normal(0, 0.04, (SIZE, SIZE, 3))
        placed = []
        for _ in range(rng.integers(1, 4)):
            cls, r = int(rng.integers(1, 3)), int(rng.integers(7, 14))
            cy, cx = (int(v) for v in rng.integers(r, SIZE - r, 2))
            box = (cy - r, cx - r, cy + r + 1, cx + r + 1, cls)
            if any(iou(box, b) > 0 for b in placed):
                continue
            mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r) if cls == 1 else \
                (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            im[mask] = rng.uniform(0, 1, 3)
            placed.append(box)
        images.append(np.clip(im, 0, 1).astype(np.float32))
        boxes.append(placed)
    return images, boxes


def iou(a, b):
    h = min(a[2], b[2]) - max(a[0], b[0])
    w = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(h, 0) * max(w, 0)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / float(area(a) + area(b) - inter)


def warp(image, box):
    return caffe.io.resize_image(image[box[0]:box[2], box[1]:box[3]], (CROP, CROP))


def training_windows(images, boxes, seed=0):
    """Warped crops and labels: jittered ground truth, and as many background windows."""
    rng = np.random.default_rng(seed)
    crops, labels = [], []
    for image, gt in zip(images, boxes):
        for b in gt:
            for _ in range(4):
                j = rng.integers(-3, 4, 4)
                box = tuple(int(v) for v in np.clip(np.array(b[:4]) + j, 0, SIZE))
                if box[2] - box[0] > 4 and box[3] - box[1] > 4 and iou(box, b) >= 0.6:
                    crops.append(warp(image, box))
                    labels.append(b[4])
        while labels.count(0) < len(labels) // 2 + 1:
            s = int(rng.integers(10, 40))
            y, x = (int(v) for v in rng.integers(0, SIZE - s, 2))
            box = (y, x, y + s, x + s)
            if all(iou(box, b) < 0.3 for b in gt):
                crops.append(warp(image, box))
                labels.append(0)
    return np.stack(crops).transpose(0, 3, 1, 2), np.array(labels, np.float32)


def classifier(batch, deploy=False):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, CROP, CROP]))
    if not deploy:
        n.label = L.Input(shape=dict(dim=[batch]))
    n.conv1 = L.Convolution(n.data, num_output=32, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"))
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2 = L.Convolution(n.pool1, num_output=64, kernel_size=3, pad=1,
                            weight_filler=dict(type="msra"))
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc6 = L.InnerProduct(n.pool2, num_output=128, weight_filler=dict(type="xavier"))
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n["fc-rcnn"] = L.InnerProduct(n.fc6, num_output=len(CLASSES),
                                  weight_filler=dict(type="xavier"))
    if deploy:
        n.prob = L.Softmax(n["fc-rcnn"])
    else:
        n.loss = L.SoftmaxWithLoss(n["fc-rcnn"], n.label)
    return n.to_proto()


def sliding_windows(sizes=(16, 22, 28), stride=4):
    return [(y, x, y + s, x + s) for s in sizes for y in range(0, SIZE - s + 1, stride)
            for x in range(0, SIZE - s + 1, stride)]


def nms(dets, overlap=0.3):
    """Greedy non-maximum suppression of (score, box) pairs, best first."""
    keep = []
    for score, box in sorted(dets, key=lambda d: -d[0]):
        if all(iou(box, k[1]) <= overlap for k in keep):
            keep.append((score, box))
    return keep


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=800)
    p.add_argument("--train", type=int, default=150, help="training scenes")
    p.add_argument("--test", type=int, default=10, help="test scenes")
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--out", default="rcnn_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    images, boxes = scenes(args.train, seed=0)
    crops, labels = training_windows(images, boxes)
    print(f"{len(crops)} training windows from {args.train} scenes "
          f"({int((labels > 0).sum())} objects, {int((labels == 0).sum())} background)")
    solver = make_solver(classifier(64), SOLVER, args.iters, out / "rcnn")
    train(solver, {"data": crops, "label": labels})
    (out / "deploy.prototxt").write_text(str(classifier(64, deploy=True)))
    detector = caffe.Detector(str(out / "deploy.prototxt"),
                              str(out / f"rcnn_iter_{args.iters}.caffemodel"))
    test_images, test_boxes = scenes(args.test, seed=1)
    windows = sliding_windows()
    files = []
    for i, image in enumerate(test_images):
        from PIL import Image
        files.append(str(out / f"scene_{i}.png"))
        Image.fromarray((image * 255).round().astype(np.uint8)).save(files[-1])
    scored = detector.detect_windows([(f, windows) for f in files])
    tp = fp = 0
    found = []
    for i, f in enumerate(files):
        mine = [d for d in scored if d["filename"] == f]
        for cls in (1, 2):
            dets = nms([(float(d["prediction"][cls]), tuple(int(v) for v in d["window"]))
                        for d in mine if d["prediction"][cls] >= args.threshold])
            gt = [b for b in test_boxes[i] if b[4] == cls]
            matched = set()
            for score, box in dets:
                hit = [j for j, b in enumerate(gt) if j not in matched and iou(box, b) >= 0.5]
                if hit:
                    matched.add(hit[0])
                    tp += 1
                else:
                    fp += 1
                found.append((Path(f).name, CLASSES[cls], score, box))
    n_gt = sum(len(b) for b in test_boxes)
    print(f"{len(windows)} windows a scene, {len(scored)} scored; detections at IoU 0.5: "
          f"precision {tp / max(tp + fp, 1):.3f}, recall {tp / max(n_gt, 1):.3f} "
          f"({n_gt} objects in {args.test} test scenes)")
    for name, cls, score, box in found[:5]:
        print(f"  {name}: {cls} {score:.3f} at (ymin, xmin, ymax, xmax) {box}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
