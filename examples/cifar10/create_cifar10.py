"""CIFAR-10 into LMDBs of Datum records plus a mean image (BVLC's create_cifar10.sh).

    python examples/cifar10/create_cifar10.py [--download | --batches DIR | --synthetic N]
                                              [--out examples/cifar10]

--download fetches the binary version from the dataset's site (get_cifar10.sh); --batches
reads an unpacked cifar-10-batches-bin; --synthetic N writes N + N/5 generated images of
ten classes instead (datasets.synthetic_cifar), for machines that cannot reach the site.
Writes cifar10_train_lmdb, cifar10_test_lmdb and mean.binaryproto into --out.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe.tools import compute_image_mean  # noqa: E402
from datasets import get_cifar10, load_cifar10, synthetic_cifar  # noqa: E402


def write_lmdb(images, labels, path):
    import lmdb
    env = lmdb.open(str(path), map_size=max(1 << 24, images.size * 4))
    with env.begin(write=True) as txn:
        for i, (image, label) in enumerate(zip(images.astype(np.uint8), labels)):
            txn.put(f"{i:05d}".encode(), caffe.io.array_to_datum(image, int(label))
                    .SerializeToString())
    env.close()
    print(f"{path}: {len(images)} images")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group()
    source.add_argument("--download", action="store_true")
    source.add_argument("--batches", metavar="DIR")
    source.add_argument("--synthetic", type=int, metavar="N")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        x_train, y_train = synthetic_cifar(args.synthetic, seed=0)
        x_test, y_test = synthetic_cifar(max(args.synthetic // 5, 1), seed=1)
    else:
        folder = args.batches or get_cifar10(str(out / "data")) if args.download or \
            args.batches else None
        if folder is None:
            p.error("give --download, --batches DIR or --synthetic N")
        x_train, y_train, x_test, y_test = load_cifar10(folder)
    for name in ("cifar10_train_lmdb", "cifar10_test_lmdb"):
        for stale in (out / name).glob("*"):
            stale.unlink()
    write_lmdb(x_train, y_train, out / "cifar10_train_lmdb")
    write_lmdb(x_test, y_test, out / "cifar10_test_lmdb")
    compute_image_mean.main(["-backend", "lmdb", str(out / "cifar10_train_lmdb"),
                             str(out / "mean.binaryproto")])
    print(f"Wrote {out / 'mean.binaryproto'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
