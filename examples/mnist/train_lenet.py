"""Train Caffe's LeNet with pycaffe's solver on handwritten digits, then score it.

    python examples/mnist/train_lenet.py                 # scikit-learn's 1,797 8x8 digits
    python examples/mnist/train_lenet.py --mnist DIR     # MNIST IDX files (.gz or raw) in DIR

The digits are upscaled to 28 x 28 and scaled to [0, 1) as Caffe's MNIST example scales
bytes (x 1/256); a stratified fifth is held out for testing. With --mnist, DIR's
train-images/labels files are used for training and t10k for testing; when only t10k is
there, its first 8,000 images train and the last 2,000 test (as the reference run did).

Batches go in through the net's Input layers from an on_start callback, the pycaffe way;
the solver and the snapshot it leaves are ordinary Caffe files (lenet_iter_N.caffemodel
and .solverstate) that BVLC's `caffe test -model examples/mnist/lenet_train_test.prototxt`
reads. --solver picks one of the variants of BVLC's examples/mnist/lenet_solver*.prototxt.
"""
import argparse
import logging
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import caffe  # noqa: E402
from caffe.formats import parse_text, read_net_param  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from caffe.tools.caffe import log_to_stderr  # noqa: E402

HERE = Path(__file__).resolve().parent
NET = HERE / "lenet_train_test.prototxt"

# Caffe's lenet_solver.prototxt, shortened: the digits need a few hundred iterations.
SOLVER = """
type: "SGD"
base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 50
random_seed: 1701
"""
# The other solvers of BVLC's MNIST examples, with their settings.
SOLVERS = {
    "sgd": SOLVER,
    "nesterov": SOLVER.replace('"SGD"', '"Nesterov"'),
    "adam": """type: "Adam" base_lr: 0.001 momentum: 0.9 momentum2: 0.999 delta: 1e-8
               lr_policy: "fixed" display: 50 random_seed: 1701""",
    "rmsprop": """type: "RMSProp" base_lr: 0.01 momentum: 0.0 weight_decay: 0.0005
                  lr_policy: "inv" gamma: 0.0001 power: 0.75 rms_decay: 0.98
                  display: 50 random_seed: 1701""",
    "adadelta": """type: "AdaDelta" base_lr: 1.0 momentum: 0.95 weight_decay: 0.0005
                   lr_policy: "fixed" delta: 1e-6 display: 50 random_seed: 1701""",
}


def load_digits(seed):
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    digits = sk_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1)          # N x 1 x 8 x 8, 0..16
    images = torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear",
                                             align_corners=False)
    images = (images.clamp(0, 16) / 16 * 255).round() / 256                 # bytes x 1/256
    x_train, x_test, y_train, y_test = train_test_split(
        images.numpy(), digits.target, test_size=0.2, random_state=seed, stratify=digits.target)
    return x_train, y_train, x_test, y_test


def load_mnist(folder):
    from caffe.tools.convert_mnist_data import read_idx

    def find(stem):
        for name in (stem, stem + ".gz"):
            if (Path(folder) / name).exists():
                return str(Path(folder) / name)
        return None

    def read(prefix):
        images, labels = find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte")
        if not (images and labels):
            return None
        x, y = read_idx(images, labels)
        return x[:, None].astype(np.float32) / 256, y.astype(np.int64)

    test = read("t10k")
    if test is None:
        raise SystemExit(f"{folder}: no t10k-images-idx3-ubyte[.gz] / t10k-labels-idx1-ubyte[.gz]")
    train = read("train")
    if train is None:
        x, y = test
        return x[:8000], y[:8000], x[8000:], y[8000:]
    return train[0], train[1], test[0], test[1]


def make_solver(iters, out_dir, solver="sgd"):
    param = parse_text(SOLVERS[solver], caffe_pb2.SolverParameter())
    param.net_param.CopyFrom(read_net_param(NET))
    param.max_iter = iters
    param.snapshot_prefix = str(Path(out_dir) / "lenet")
    return caffe.get_solver(param)


def feeder(solver, x, y, seed):
    """An on_start callback that puts the next shuffled batch into the Input blobs."""
    data, label = solver.net.blobs["data"], solver.net.blobs["label"]
    batch = data.shape[0]
    rng = np.random.default_rng(seed)
    state = {"order": rng.permutation(len(x)), "pos": 0}

    def feed():
        if state["pos"] + batch > len(x):
            state["order"], state["pos"] = rng.permutation(len(x)), 0
        pick = state["order"][state["pos"]:state["pos"] + batch]
        state["pos"] += batch
        data.data[...] = x[pick]
        label.data[...] = y[pick]
    return feed


def accuracy(solver, x, y):
    """Score the trained weights on (x, y) with the TEST-phase net, batch by batch."""
    net = caffe.Net(solver.param.net_param, caffe.TEST)
    net.share_with(solver.net)
    data, label, scores = net.blobs["data"], net.blobs["label"], net.blobs["ip2"]
    batch, correct = data.shape[0], 0
    for i in range(0, len(x), batch):
        n = min(batch, len(x) - i)
        data.data[:n], label.data[:n] = x[i:i + n], y[i:i + n]
        net.forward()
        correct += int((scores.data[:n].argmax(axis=1) == y[i:i + n]).sum())
    return correct / len(x)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist", metavar="DIR", help="train on MNIST IDX files in DIR instead")
    p.add_argument("--iters", type=int, default=None,
                   help="training iterations (default 300 on digits, 2000 on MNIST)")
    p.add_argument("--out", default=None, help="folder for the snapshot "
                   "(default ./lenet_digits or ./lenet_mnist)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the batch order")
    p.add_argument("--quiet", action="store_true", help="no training log")
    p.add_argument("--solver", choices=SOLVERS, default="sgd", help="the solver variant")
    args = p.parse_args(argv)

    log_to_stderr(logging.WARNING)
    if not args.quiet:
        logging.getLogger("caffe.solver").setLevel(logging.INFO)
    dataset = "mnist" if args.mnist else "digits"
    iters = args.iters or (2000 if args.mnist else 300)
    out_dir = Path(args.out or f"lenet_{dataset}")
    out_dir.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_test, y_test = load_mnist(args.mnist) if args.mnist else \
        load_digits(args.seed)
    print(f"{dataset}: {len(x_train)} training and {len(x_test)} test images, "
          f"{iters} iterations of {64} images, {args.solver}")
    start = time.perf_counter()
    solver = make_solver(iters, out_dir, args.solver)
    solver.add_callback(feeder(solver, x_train, y_train, args.seed), None)
    solver.solve()  # snapshot_after_train leaves lenet_iter_<iters>.caffemodel/.solverstate
    elapsed = time.perf_counter() - start
    acc = accuracy(solver, x_test, y_test)
    model = f"{solver.param.snapshot_prefix}_iter_{solver.iter}.caffemodel"
    print(f"Test accuracy: {acc:.4f} ({len(x_test)} held-out images), "
          f"trained in {elapsed:.1f} s")
    print(f"Model saved to {os.path.abspath(model)} (net: {NET})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
