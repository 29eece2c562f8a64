"""The examples' data: public data sets when they are here (or can be fetched), small
synthetic stand-ins of the same shapes when they are not.

get_mnist / get_cifar10 fetch the public archives with caffe.zoo's downloader (progress
bar, resume, atomic rename), as BVLC's data/*/get_*.sh did; every loader returns float32
N x C x H x W arrays and int64 labels. Offline, the `digits` and `synthetic_*` sets stand in.
"""
import gzip
import os
import tarfile
from pathlib import Path

import numpy as np

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
               "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def _fetch(url, folder):
    from caffe.zoo.fetch import download
    dest = Path(folder) / url.rsplit("/", 1)[1]
    if not dest.exists():
        part = Path(folder) / ".partial" / (dest.name + ".part")
        download(url, str(dest), str(part), desc=dest.name)
    return dest


def get_mnist(folder="data/mnist"):
    """Download MNIST's four IDX files into folder (what data/mnist/get_mnist.sh did)."""
    os.makedirs(folder, exist_ok=True)
    return [_fetch(MNIST_URL + name, folder) for name in MNIST_FILES]


def get_cifar10(folder="data/cifar10"):
    """Download and unpack CIFAR-10's binary version into folder/cifar-10-batches-bin."""
    os.makedirs(folder, exist_ok=True)
    archive = _fetch(CIFAR10_URL, folder)
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    return Path(folder) / "cifar-10-batches-bin"


def load_mnist(folder):
    """(train x, train y, test x, test y) from MNIST IDX files, pixels x 1/256 as Caffe scales
    them. With only the t10k files (../shared has those), 8,000 train and 2,000 test."""
    def read(prefix):
        paths = [Path(folder) / f"{prefix}-{kind}-idx{d}-ubyte" for kind, d in
                 (("images", 3), ("labels", 1))]
        paths = [p if p.exists() else p.with_name(p.name + ".gz") for p in paths]
        if not all(p.exists() for p in paths):
            return None
        opener = [gzip.open if p.suffix == ".gz" else open for p in paths]
        with opener[0](paths[0], "rb") as f:
            images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with opener[1](paths[1], "rb") as f:
            labels = np.frombuffer(f.read(), np.uint8, offset=8)
        return images.astype(np.float32) / 256, labels.astype(np.int64)

    test = read("t10k")
    if test is None:
        raise FileNotFoundError(f"{folder}: no t10k-images-idx3-ubyte[.gz] and labels")
    train = read("train")
    if train is None:
        (x, y) = test
        return x[:8000], y[:8000], x[8000:], y[8000:]
    return train + test


def load_digits(seed=0, size=28):
    """scikit-learn's 1,797 8 x 8 digits upscaled to size x size, bytes x 1/256 like MNIST;
    a stratified fifth held out for testing."""
    import torch
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split
    digits = sk_digits()
    images = torch.from_numpy(digits.images).float().unsqueeze(1)
    images = torch.nn.functional.interpolate(images, size=(size, size), mode="bilinear",
                                             align_corners=False)
    images = ((images.clamp(0, 16) / 16 * 255).round() / 256).numpy()
    return tuple(train_test_split(images, digits.target.astype(np.int64), test_size=0.2,
                                  random_state=seed, stratify=digits.target)[i]
                 for i in (0, 2, 1, 3))


def load_handwriting(mnist=None, seed=0):
    """MNIST from `mnist` (a folder), else ../shared's MNIST test set, else the digits."""
    for folder in (mnist, SHARED_MNIST if mnist is None else None):
        if folder and Path(folder).exists():
            return "mnist", load_mnist(folder)
    return "digits", load_digits(seed)


def load_cifar10(folder):
    """(train x, train y, test x, test y) from CIFAR-10's binary batches, pixels 0..255."""
    def read(paths):
        records = np.concatenate([np.fromfile(p, np.uint8).reshape(-1, 3073) for p in paths])
        return records[:, 1:].reshape(-1, 3, 32, 32).astype(np.float32), \
            records[:, 0].astype(np.int64)
    folder = Path(folder)
    train = read(sorted(folder.glob("data_batch_*.bin")))
    return train + read([folder / "test_batch.bin"])


def synthetic_cifar(n, seed=0, classes=10, size=32):
    """Stand-in for CIFAR-10: size x size colour images, 0..255, whose class sets a stripe
    orientation/frequency and a hue, under noise and random phase: learnable, not trivial."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    yy, xx = np.mgrid[:size, :size] / size
    angle = y * np.pi / classes
    freq = 2 + (y % 3)
    phase = rng.uniform(0, 2 * np.pi, n)
    wave = np.sin(2 * np.pi * freq[:, None, None] * (np.cos(angle)[:, None, None] * xx +
                                                   np.sin(angle)[:, None, None] * yy) +
                  phase[:, None, None])
    hue = np.stack([np.cos(2 * np.pi * y / classes + k * 2.1) for k in range(3)], axis=1)
    images = 128 + 60 * wave[:, None] * (0.6 + 0.4 * hue[:, :, None, None]) + \
        rng.normal(0, 25, (n, 3, size, size))
    return np.clip(images, 0, 255).astype(np.float32), y.astype(np.int64)
