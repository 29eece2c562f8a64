"""Logistic regression, and a small non-linear net, on HDF5 data (BVLC's brewing-logreg).

    python examples/hdf5_classification/logreg.py [--iters 10000] [--out hdf5_out]

A 2-class problem from scikit-learn's make_classification (4 features, 2 informative, two
clusters a class) goes into HDF5 files listed in train.txt/test.txt, read by HDF5Data
layers. scikit-learn's own logistic regression is the baseline; Caffe's logistic
regression (one InnerProduct + softmax) should match it and the net with a hidden ReLU
layer of 40 units beat both.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from caffe.formats import parse_text  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402

SOLVER = """base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "step" gamma: 0.1
stepsize: {step} display: {display} random_seed: 1701"""


def make_data(out, n=10000, seed=0):
    """Write the train/test HDF5 files and their list files; returns the arrays."""
    import h5py
    from sklearn.datasets import make_classification
    from sklearn.model_selection import train_test_split
    x, y = make_classification(n_samples=n, n_features=4, n_redundant=0, n_informative=2,
                               n_clusters_per_class=2, hypercube=False, random_state=seed)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25,
                                                        random_state=seed)
    for split, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
        files = []
        for i, start in enumerate(range(0, len(xs), 5000)):       # several files, as HDF5
            path = out / f"{split}_{i}.h5"                          # users keep them small
            with h5py.File(path, "w") as f:
                f.create_dataset("data", data=xs[start:start + 5000].astype(np.float32))
                f.create_dataset("label", data=ys[start:start + 5000].astype(np.float32))
            files.append(str(path))
        (out / f"{split}.txt").write_text("\n".join(files) + "\n")
    return x_train, y_train, x_test, y_test


def logreg(source, batch, hidden=0):
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch, source=str(source), ntop=2)
    x = n.data
    if hidden:
        n.ip1 = L.InnerProduct(x, num_output=hidden, weight_filler=dict(type="xavier"))
        x = n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.score = L.InnerProduct(x, num_output=2, weight_filler=dict(type="xavier"))
    n.accuracy = L.Accuracy(n.score, n.label)
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


def train_and_score(out, name, hidden, iters, n_test):
    train_net, test_net = logreg(out / "train.txt", 10, hidden), logreg(out / "test.txt", 10,
                                                                         hidden)
    (out / f"{name}_train.prototxt").write_text(str(train_net))
    (out / f"{name}_test.prototxt").write_text(str(test_net))
    param = parse_text(SOLVER.format(step=max(iters // 2, 1), display=max(iters // 5, 1)),
                       caffe_pb2.SolverParameter())
    param.train_net = str(out / f"{name}_train.prototxt")
    param.max_iter, param.snapshot_prefix = iters, str(out / name)
    solver = caffe.get_solver(param)
    solver.solve()
    # Score the snapshot with the test definition, as `caffe test` would.
    net = caffe.Net(str(out / f"{name}_test.prototxt"),
                    str(out / f"{name}_iter_{iters}.caffemodel"), caffe.TEST)
    batches = n_test // 10
    # float(): forward() returns views of the blobs, which the next batch overwrites.
    return float(np.mean([float(net.forward()["accuracy"]) for _ in range(batches)]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=10000)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--out", default="hdf5_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train, x_test, y_test = make_data(out, args.samples)
    from sklearn.linear_model import LogisticRegression
    baseline = LogisticRegression().fit(x_train, y_train).score(x_test, y_test)
    print(f"scikit-learn logistic regression: accuracy {baseline:.3f}")
    for name, hidden in (("logreg", 0), ("nonlinear", 40)):
        accuracy = train_and_score(out, name, hidden, args.iters, len(x_test))
        print(f"Caffe {name} ({args.iters} iterations): accuracy {accuracy:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
