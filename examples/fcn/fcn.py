"""Fully convolutional semantic segmentation, FCN-32s style (BVLC/fcn.berkeleyvision.org).

    python examples/fcn/fcn.py [--iters 600] [--out fcn_out]

Scenes of 64 x 64 pixels hold a random number of squares (class 1) and discs (class 2) of
random colours on a textured background (class 0); the net labels every pixel. A small
conv/pool trunk gives coarse scores at 1/4 resolution; a Deconvolution layer with a fixed
bilinear kernel (weight_filler bilinear, lr_mult 0: FCN's upsampling) brings them back up
and a Crop layer, its offset computed by caffe.coord_map as in FCN's net.py, aligns them
with the input for a per-pixel SoftmaxWithLoss. Per-class IoU and mean IoU are printed, and
a PNG shows scenes, their labels and the predictions.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, params as P, vis  # noqa: E402
from caffe.coord_map import crop  # noqa: E402
from training import make_solver, outputs, test_net, train  # noqa: E402

CLASSES = ("background", "square", "disc")
SOLVER = ('type: "Adam" base_lr: 0.002 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
          'display: 100 random_seed: 1701')


def scenes(n, size=64, seed=0):
    """(images N x 3 x size x size in [0, 1], labels N x 1 x size x size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = np.empty((n, 3, size, size), np.float32)
    labels = np.zeros((n, 1, size, size), np.float32)
    for i in range(n):
        images[i] = 0.35 + 0.15 * np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6))
        for _ in range(rng.integers(1, 4)):
            cls, r = rng.integers(1, 3), rng.integers(5, 12)
            cy, cx = rng.integers(r, size - r, 2)
            if cls == 1:
                mask = (abs(yy - cy) <= r) & (abs(xx - cx) <= r)
            else:
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            images[i][:, mask] = rng.uniform(0, 1, (3, 1))
            labels[i, 0][mask] = cls
    images += rng.normal(0, 0.05, images.shape).astype(np.float32)
    return images, labels


def fcn(batch=10, size=64):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, size, size]))
    n.label = L.Input(shape=dict(dim=[batch, 1, size, size]))
    x = n.data
    for i, width in enumerate((32, 64), 1):
        n[f"conv{i}_1"] = L.Convolution(x, num_output=width, kernel_size=3, pad=1,
                                        weight_filler=dict(type="msra"))
        n[f"relu{i}_1"] = L.ReLU(n[f"conv{i}_1"], in_place=True)
        n[f"conv{i}_2"] = L.Convolution(n[f"conv{i}_1"], num_output=width, kernel_size=3,
                                        pad=1, weight_filler=dict(type="msra"))
        n[f"relu{i}_2"] = L.ReLU(n[f"conv{i}_2"], in_place=True)
        x = n[f"pool{i}"] = L.Pooling(n[f"conv{i}_2"], pool=P.Pooling.MAX, kernel_size=2,
                                      stride=2)
    n.fc = L.Convolution(x, num_output=128, kernel_size=5, pad=2,
                         weight_filler=dict(type="msra"))
    n.relu_fc = L.ReLU(n.fc, in_place=True)
    n.score_fr = L.Convolution(n.fc, num_output=len(CLASSES), kernel_size=1,
                               weight_filler=dict(type="xavier"))
    # Upsampling x4 by a fixed bilinear kernel, one channel per class (group), as FCN does.
    n.upscore = L.Deconvolution(n.score_fr, param=[dict(lr_mult=0)], convolution_param=dict(
        num_output=len(CLASSES), group=len(CLASSES), kernel_size=8, stride=4, bias_term=False,
        weight_filler=dict(type="bilinear")))
    n.score = crop(n.upscore, n.data)
    n.loss = L.SoftmaxWithLoss(n.score, n.label, loss_param=dict(normalize=True))
    return n.to_proto()


def iou(predicted, labels, classes=len(CLASSES)):
    """Per-class intersection over union of label maps (FCN's score.py)."""
    hist = np.bincount(classes * labels.astype(np.int64).ravel() + predicted.ravel(),
                       minlength=classes * classes).reshape(classes, classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=600)
    p.add_argument("--train", type=int, default=500, help="training scenes")
    p.add_argument("--test", type=int, default=100, help="test scenes")
    p.add_argument("--out", default="fcn_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = scenes(args.train, seed=0)
    x_test, y_test = scenes(args.test, seed=1)
    net = fcn()
    (out / "fcn_train.prototxt").write_text(str(net))
    solver = make_solver(net, SOLVER, args.iters)
    up = solver.net.params["upscore"][0].data
    print(f"upscore: Deconvolution {tuple(up.shape)}, bilinear kernel row "
          f"{[round(float(v), 3) for v in up[0, 0, 3]]}; score cropped to "
          f"{solver.net.blobs['score'].data.shape}")
    train(solver, {"data": x, "label": y})
    scores = outputs(test_net(solver), {"data": x_test, "label": y_test}, ["score"])["score"]
    predicted = scores.argmax(1)
    per_class = iou(predicted, y_test[:, 0])
    print("IoU: " + ", ".join(f"{c} {v:.3f}" for c, v in zip(CLASSES, per_class)) +
          f"; mean IoU {np.nanmean(per_class):.3f}; pixel accuracy "
          f"{np.mean(predicted == y_test[:, 0]):.3f} ({args.test} test scenes, "
          f"{args.iters} iterations)")
    k = min(4, len(x_test))
    tiles = np.concatenate([x_test[:k].transpose(0, 2, 3, 1),
                            np.repeat(y_test[:k, 0, :, :, None] / 2, 3, axis=3),
                            np.repeat(predicted[:k, :, :, None] / 2, 3, axis=3)])
    png = vis.save_png(vis.vis_square(np.clip(tiles, 0, 1), normalize="none"),
                       str(out / "segmentation.png"))
    print(f"Wrote {png} (rows: scenes, labels, predictions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
