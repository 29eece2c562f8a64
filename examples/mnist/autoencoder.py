"""MNIST autoencoder (BVLC's examples/mnist/mnist_autoencoder.prototxt), built with NetSpec.

    python examples/mnist/autoencoder.py [--mnist DIR] [--iters 2000] [--solver nesterov]

784-1000-500-250-30-250-500-1000-784 with sigmoids, trained on the cross-entropy of the
reconstruction (SigmoidCrossEntropyLoss); the Euclidean error is reported too. Writes
autoencoder.prototxt and a PNG of test digits (top rows) over their reconstructions.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L, vis  # noqa: E402
from datasets import load_handwriting  # noqa: E402
from training import make_solver, outputs, test_net, train  # noqa: E402

SIZES = (1000, 500, 250, 30)
# BVLC's solvers for this net: mnist_autoencoder_solver{_nesterov,_adagrad}.prototxt.
SOLVERS = {
    "nesterov": 'type: "Nesterov" base_lr: 0.01 lr_policy: "step" gamma: 0.1 '
                'stepsize: 10000 momentum: 0.95 weight_decay: 0.0005 display: 100',
    "adagrad": 'type: "AdaGrad" base_lr: 0.01 lr_policy: "fixed" weight_decay: 0.0005 '
               'display: 100',
    "sgd": 'type: "SGD" base_lr: 0.01 lr_policy: "step" gamma: 0.1 stepsize: 10000 '
           'momentum: 0.9 weight_decay: 0.0005 display: 100',
}


def autoencoder(batch=100, sizes=SIZES):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[batch, 1, 28, 28]))
    n.flatdata = L.Flatten(n.data)
    filler = dict(type="gaussian", std=1, sparse=15)
    x = n.data
    for i, size in enumerate(sizes, 1):                  # encoder
        x = L.InnerProduct(x, num_output=size, weight_filler=filler,
                           bias_filler=dict(type="constant"),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=1, decay_mult=0)])
        n[f"encode{i}"] = x
        if i < len(sizes):
            x = n[f"encode{i}neuron"] = L.Sigmoid(x, in_place=True)
    for i, size in reversed(list(enumerate((784,) + sizes[:-1], 1))):   # decoder
        x = L.InnerProduct(x, num_output=size, weight_filler=filler,
                           bias_filler=dict(type="constant"),
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=1, decay_mult=0)])
        n[f"decode{i}"] = x
        if i > 1:
            x = n[f"decode{i}neuron"] = L.Sigmoid(x, in_place=True)
    n.loss = L.SigmoidCrossEntropyLoss(n.decode1, n.flatdata)
    n.decode1neuron = L.Sigmoid(n.decode1)
    n.l2_error = L.EuclideanLoss(n.decode1neuron, n.flatdata, loss_weight=0)
    return n.to_proto()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", metavar="DIR", help="MNIST IDX files (default: ../shared's "
                   "test set, else scikit-learn's digits)")
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--solver", choices=SOLVERS, default="nesterov")
    p.add_argument("--limit", type=int, default=0, help="use only this many train and "
                   "test images (quick runs)")
    p.add_argument("--out", default="autoencoder_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name, data = load_handwriting(args.mnist)
    x_train, _, x_test, _ = (a[:args.limit or None] for a in data)
    net = autoencoder(args.batch)
    (out / "autoencoder.prototxt").write_text(str(net))
    solver = make_solver(net, SOLVERS[args.solver], args.iters)
    print(f"{name}: {len(x_train)} training images, {args.iters} iterations, {args.solver}")
    tester = test_net(solver)
    before = outputs(tester, {"data": x_test[:args.batch]}, ["loss", "l2_error"])
    train(solver, {"data": x_train})
    after = outputs(tester, {"data": x_test}, ["loss", "l2_error", "decode1neuron"])
    print(f"Test cross-entropy loss: {before['loss'].mean():.2f} before, "
          f"{after['loss'].mean():.2f} after training")
    print(f"Test Euclidean error: {after['l2_error'].mean():.3f} per image "
          f"(before {before['l2_error'].mean():.3f})")
    shown = np.concatenate([x_test[:16, 0], after["decode1neuron"][:16].reshape(-1, 28, 28)])
    png = vis.save_png(vis.vis_square(shown, normalize="none"), str(out / "reconstructions.png"))
    print(f"Wrote {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
