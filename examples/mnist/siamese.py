"""Siamese network on MNIST (BVLC's examples/siamese): a 2-D embedding learned from pairs.

    python examples/mnist/siamese.py [--mnist DIR] [--iters 2000]

Two LeNet towers share their weights (param names conv1_w, ...); ContrastiveLoss pulls
pairs of the same digit together and pushes different digits at least `margin` apart. The
test digits' 2-D features are plotted, one colour a class (siamese_embedding.png), and the
nearest-class-centre accuracy in that plane is printed.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, params as P  # noqa: E402
from datasets import load_handwriting  # noqa: E402
from training import make_solver, outputs, test_net, train  # noqa: E402

# BVLC's mnist_siamese_solver.prototxt.
SOLVER = ('type: "SGD" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0000 lr_policy: "inv" '
          'gamma: 0.0001 power: 0.75 display: 100 random_seed: 1701')


def tower(n, data, suffix):
    """LeNet to a 2-D feature; weights shared by parameter name across the towers."""
    def shared(name):
        return [dict(name=f"{name}_w", lr_mult=1), dict(name=f"{name}_b", lr_mult=2)]
    xavier = dict(type="xavier")
    n["conv1" + suffix] = L.Convolution(data, num_output=20, kernel_size=5, param=shared("conv1"),
                                        weight_filler=xavier)
    n["pool1" + suffix] = L.Pooling(n["conv1" + suffix], pool=P.Pooling.MAX, kernel_size=2,
                                    stride=2)
    n["conv2" + suffix] = L.Convolution(n["pool1" + suffix], num_output=50, kernel_size=5,
                                        param=shared("conv2"), weight_filler=xavier)
    n["pool2" + suffix] = L.Pooling(n["conv2" + suffix], pool=P.Pooling.MAX, kernel_size=2,
                                    stride=2)
    n["ip1" + suffix] = L.InnerProduct(n["pool2" + suffix], num_output=500,
                                       param=shared("ip1"), weight_filler=xavier)
    n["relu1" + suffix] = L.ReLU(n["ip1" + suffix], in_place=True)
    n["ip2" + suffix] = L.InnerProduct(n["relu1" + suffix], num_output=10, param=shared("ip2"),
                                       weight_filler=xavier)
    n["feat" + suffix] = L.InnerProduct(n["ip2" + suffix], num_output=2, param=shared("feat"),
                                        weight_filler=xavier)
    return n["feat" + suffix]


def siamese(batch=64):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 1, 28, 28]))
    n.data_p = L.Input(shape=dict(dim=[batch, 1, 28, 28]))
    n.sim = L.Input(shape=dict(dim=[batch]))
    n.loss = L.ContrastiveLoss(tower(n, n.data, ""), tower(n, n.data_p, "_p"), n.sim,
                               contrastive_loss_param=dict(margin=1))
    return n.to_proto()


def make_pairs(x, y, seed=0):
    """Each image with a partner: the same class half of the time, sim = 1 for those."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(y == c) for c in range(10)]
    same = rng.random(len(x)) < 0.5
    partner = rng.integers(0, len(x), len(x))
    for i in np.flatnonzero(same):
        partner[i] = rng.choice(by_class[y[i]])
    return x[partner], (y[partner] == y).astype(np.float32)


def plot(features, labels, path):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    for c in range(10):
        pts = features[labels == c]
        ax.plot(pts[:, 0], pts[:, 1], ".", markersize=3, label=str(c))
    ax.legend(markerscale=4, fontsize=8)
    ax.set_title("siamese: 2-D features of the test digits")
    fig.savefig(path, bbox_inches="tight")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", metavar="DIR")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--limit", type=int, default=0, help="use only this many train and "
                   "test images (quick runs)")
    p.add_argument("--out", default="siamese_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name, data = load_handwriting(args.mnist)
    x_train, y_train, x_test, y_test = (a[:args.limit or None] for a in data)
    net = siamese()
    (out / "mnist_siamese_train_test.prototxt").write_text(str(net))
    solver = make_solver(net, SOLVER, args.iters)
    partners, sim = make_pairs(x_train, y_train)
    print(f"{name}: {len(x_train)} training pairs, {args.iters} iterations")
    train(solver, {"data": x_train, "data_p": partners, "sim": sim})
    feats = outputs(test_net(solver), {"data": x_test, "data_p": x_test,
                                       "sim": np.ones(len(x_test), np.float32)}, ["feat"])["feat"]
    centres = np.stack([feats[y_test == c].mean(0) for c in range(10)])
    nearest = np.argmin(((feats[:, None] - centres[None]) ** 2).sum(-1), axis=1)
    print(f"Nearest class centre in the 2-D embedding: {np.mean(nearest == y_test):.4f} "
          f"of {len(x_test)} test digits")
    plot(feats, y_test, out / "siamese_embedding.png")
    print(f"Wrote {out / 'siamese_embedding.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
