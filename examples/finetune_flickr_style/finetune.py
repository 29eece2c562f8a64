"""Fine-tuning a pretrained net on a new task (BVLC's finetune_flickr_style), offline.

    python examples/finetune_flickr_style/finetune.py [--pretrain_iters 400] [--iters 200]
    python examples/finetune_flickr_style/finetune.py --weights pretrained.caffemodel

BVLC fine-tunes CaffeNet (ImageNet weights, `caffe zoo download bvlc_reference_caffenet`)
to 20 Flickr photo styles: every layer keeps its learned weights except the classifier,
renamed fc8_flickr so copy_from skips it, which learns 10x faster than the rest. The
Flickr images cannot be fetched here, so this example does the same on stand-ins: a small
CaffeNet-shaped net is first trained on 10 content classes (datasets.synthetic_cifar) in
place of ImageNet, then fine-tuned to 5 "styles" (a tint, grey, high contrast, blur, grain
applied to new images). The style net is trained twice, from the pretrained weights and
from scratch, and both accuracies are printed: starting from learned features wins.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from datasets import synthetic_cifar  # noqa: E402
from training import make_solver, outputs, test_net, train  # noqa: E402

STYLES = ("warm", "grey", "contrast", "blur", "grain")
SOLVER = ('type: "SGD" base_lr: {lr} momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" '
          'gamma: 0.1 stepsize: 100000 display: 50 random_seed: 1701')


def caffenet_small(classes, classifier="fc8", batch=50, new_lr=1):
    """CaffeNet's shape in miniature: conv-pool-LRN twice, fc6, fc7, dropout, classifier."""
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 3, 32, 32]))
    n.label = L.Input(shape=dict(dim=[batch]))
    learn = [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)]
    gauss = dict(type="gaussian", std=0.01)
    n.conv1 = L.Convolution(n.data, num_output=32, kernel_size=5, pad=2, param=learn,
                            weight_filler=gauss)
    n.relu1 = L.ReLU(n.conv1, in_place=True)
    n.pool1 = L.Pooling(n.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2 = L.Convolution(n.norm1, num_output=64, kernel_size=5, pad=2, param=learn,
                            weight_filler=gauss)
    n.relu2 = L.ReLU(n.conv2, in_place=True)
    n.pool2 = L.Pooling(n.conv2, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.fc6 = L.InnerProduct(n.pool2, num_output=128, param=learn,
                           weight_filler=dict(type="xavier"))
    n.relu6 = L.ReLU(n.fc6, in_place=True)
    n.fc7 = L.InnerProduct(n.fc6, num_output=128, param=learn, weight_filler=dict(type="xavier"))
    n.relu7 = L.ReLU(n.fc7, in_place=True)
    n.drop7 = L.Dropout(n.fc7, in_place=True, dropout_ratio=0.5)
    n[classifier] = L.InnerProduct(n.fc7, num_output=classes, weight_filler=gauss,
                                   param=[dict(lr_mult=new_lr, decay_mult=1),
                                          dict(lr_mult=2 * new_lr, decay_mult=0)])
    n.loss = L.SoftmaxWithLoss(n[classifier], n.label)
    n.prob = L.Softmax(n[classifier])
    return n.to_proto()


def stylize(images, styles, seed=0):
    """Apply style s to each 0..255 image: the stand-in for Flickr's photographic styles."""
    rng = np.random.default_rng(seed)
    out = images.copy()
    for i, s in enumerate(styles):
        im = out[i]
        if s == 0:
            im *= np.array([0.7, 0.9, 1.25], np.float32)[:, None, None]   # BGR: warm
        elif s == 1:
            im[:] = im.mean(0, keepdims=True)
        elif s == 2:
            im[:] = (im - im.mean()) * 2.0 + im.mean()
        elif s == 3:
            for axis in (1, 2):
                im[:] = (np.roll(im, 1, axis) + im + np.roll(im, -1, axis)) / 3
        else:
            im += rng.normal(0, 40, im.shape).astype(np.float32)
    return np.clip(out, 0, 255)


def style_data(n, seed):
    images, _ = synthetic_cifar(n, seed=seed)
    styles = np.random.default_rng(seed).integers(0, len(STYLES), n)
    return (stylize(images, styles, seed) - 128) / 64, styles


def accuracy(solver, x, y):
    probs = outputs(test_net(solver), {"data": x, "label": y.astype(np.float32)},
                    ["prob"])["prob"]
    return float(np.mean(probs.argmax(1) == y))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrain_iters", type=int, default=400)
    p.add_argument("--iters", type=int, default=200, help="fine-tuning iterations")
    p.add_argument("--images", type=int, default=2000, help="style training images")
    p.add_argument("--test_images", type=int, default=500)
    p.add_argument("--weights", help="pretrained weights (default: pretrain here)")
    p.add_argument("--out", default="finetune_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = args.weights
    if not weights:
        x, y = synthetic_cifar(max(args.images, 500), seed=10)
        content = make_solver(caffenet_small(10), SOLVER.format(lr=0.01), args.pretrain_iters,
                              out / "pretrained")
        train(content, {"data": (x - 128) / 64, "label": y.astype(np.float32)})
        weights = str(out / f"pretrained_iter_{args.pretrain_iters}.caffemodel")
        xt, yt = synthetic_cifar(args.test_images, seed=11)
        print(f"Pretrained on 10 content classes ({args.pretrain_iters} iterations): "
              f"accuracy {accuracy(content, (xt - 128) / 64, yt):.3f}; weights {weights}")
    x, y = style_data(args.images, seed=20)
    x_test, y_test = style_data(args.test_images, seed=21)
    style_net = caffenet_small(len(STYLES), classifier="fc8_flickr", new_lr=10)
    (out / "finetune_style_train.prototxt").write_text(str(style_net))
    results = {}
    for start in ("pretrained", "scratch"):
        caffe.set_random_seed(1701)
        solver = make_solver(style_net, SOLVER.format(lr=0.001), args.iters)
        if start == "pretrained":
            solver.net.copy_from(weights)          # all but fc8_flickr, which is new
        train(solver, {"data": x, "label": y.astype(np.float32)})
        results[start] = accuracy(solver, x_test, y_test)
        print(f"Style accuracy after {args.iters} iterations from {start}: "
              f"{results[start]:.3f} (chance {1 / len(STYLES):.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
