"""Feature extraction with `caffe extract_features`, then a t-SNE map of the features.

    python examples/feature_extraction/features_tsne.py [--weights lenet.caffemodel]
           [--blob ip1] [--images 1000] [--out features_out]

BVLC's feature_extraction example runs the extract_features tool over a Data layer and
stores one Datum a feature vector in a database. Here the digits (MNIST's test set from
../shared or --mnist, else scikit-learn's digits) go into an LMDB, LeNet (the weights of
examples/mnist/train_lenet.py, or a short training run when --weights is not given) is
run over it by `caffe extract_features`, the features are read back from the LMDB, and
scikit-learn's t-SNE (pip install 'pycaffe[examples]') maps them to 2-D for a scatter
plot. The 5-nearest-neighbour accuracy in feature space and in the map is printed.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "mnist"))
import caffe  # noqa: E402
from caffe.formats import read_net_param  # noqa: E402
from caffe.tools.caffe import main as caffe_main  # noqa: E402
from datasets import SHARED_MNIST, load_handwriting  # noqa: E402


def write_lmdb(x, y, path):
    import lmdb
    env = lmdb.open(str(path), map_size=1 << 28)
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(x, y)):
            pixels = np.round(image * 256).clip(0, 255).astype(np.uint8)
            txn.put(f"{i:08d}".encode(),
                    caffe.io.array_to_datum(pixels, int(label)).SerializeToString())
    env.close()


def read_lmdb(path):
    import lmdb
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        rows = [caffe.io.datum_to_array(caffe.proto.caffe_pb2.Datum.FromString(v)).ravel()
                for _, v in txn.cursor()]
    env.close()
    return np.stack(rows)


def feature_net(db, batch):
    """LeNet's deploy layers over a Data layer reading db (pixels x 1/256, as in training)."""
    lenet = read_net_param(HERE.parent / "mnist" / "lenet_train_test.prototxt")
    net = caffe.proto.caffe_pb2.NetParameter(name="LeNet_features")
    data = net.layer.add(name="mnist", type="Data", top=["data", "label"])
    data.data_param.source, data.data_param.batch_size = str(db), batch
    data.data_param.backend = caffe.proto.caffe_pb2.DataParameter.LMDB
    data.transform_param.scale = 0.00390625
    for layer in lenet.layer:
        if layer.type not in ("Input", "SoftmaxWithLoss", "Accuracy"):
            net.layer.add().CopyFrom(layer)
    return net


def knn_accuracy(points, labels, k=5):
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    return float(cross_val_score(KNeighborsClassifier(k), points, labels, cv=5).mean())


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="LeNet weights (default: train 300 iterations here)")
    p.add_argument("--mnist", metavar="DIR")
    p.add_argument("--blob", default="ip1")
    p.add_argument("--images", type=int, default=1000)
    p.add_argument("--train_iters", type=int, default=300)
    p.add_argument("--out", default="features_out")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    name, (_, _, x, y) = load_handwriting(args.mnist)
    weights = args.weights
    if not weights:                    # LeNet trained on the same kind of digits
        import train_lenet
        mnist = args.mnist or (str(SHARED_MNIST) if name == "mnist" else None)
        train_lenet.main(["--iters", str(args.train_iters), "--quiet", "--out", str(out)]
                         + (["--mnist", mnist] if mnist else []))
        weights = str(out / f"lenet_iter_{args.train_iters}.caffemodel")
    x, y = x[:args.images], y[:args.images]
    batch = 50 if len(x) % 50 == 0 else 1
    db, features = out / "digits_lmdb", out / f"features_{args.blob}"
    for folder in (db, features):
        for stale in folder.glob("*") if folder.exists() else []:
            stale.unlink()
    write_lmdb(x, y, db)
    (out / "lenet_features.prototxt").write_text(str(feature_net(db, batch)))
    command = ["extract_features", weights, str(out / "lenet_features.prototxt"), args.blob,
               str(features), str(len(x) // batch), "lmdb"]
    print("caffe " + " ".join(command), flush=True)
    if caffe_main(command) not in (0, None):
        return 1
    feats = read_lmdb(features)
    print(f"{len(feats)} {name} test images -> {feats.shape[1]}-d {args.blob} features")
    from sklearn.manifold import TSNE
    embedded = TSNE(n_components=2, init="pca", perplexity=min(30, len(feats) - 1),
                    random_state=0).fit_transform(feats)
    print(f"5-NN accuracy: {knn_accuracy(feats, y):.3f} on the {args.blob} features, "
          f"{knn_accuracy(embedded, y):.3f} on the 2-D t-SNE map")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(6, 6), dpi=100)
    ax = fig.add_subplot()
    for c in range(10):
        ax.plot(*embedded[y == c].T, ".", markersize=3, label=str(c))
    ax.legend(markerscale=4, fontsize=8)
    ax.set_title(f"t-SNE of LeNet {args.blob} features")
    fig.savefig(out / "tsne.png", bbox_inches="tight")
    print(f"Wrote {out / 'tsne.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
