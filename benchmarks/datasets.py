"""Data sets the benchmarks build: a LeNet MNIST LMDB and an LMDB of 256x256 JPEGs.

Both are made with our own tools (convert_mnist_data, convert_imageset --encoded,
compute_image_mean), so that pycaffe and BVLC read the very same files.
"""
import gzip
import os
import shutil

import numpy as np

MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared",
                     "data", "mnist")


def mnist_lmdb(folder, images="t10k-images-idx3-ubyte", labels="t10k-labels-idx1-ubyte"):
    """An MNIST LMDB made by our convert_mnist_data from ../shared/data/mnist; its path."""
    from caffe.tools import convert_mnist_data
    out = os.path.join(folder, "mnist_lmdb")
    if os.path.exists(out):
        return out
    raw = []
    for name in (images, labels):
        dst = os.path.join(folder, name)
        with gzip.open(os.path.join(MNIST, name + ".gz"), "rb") as f, open(dst, "wb") as g:
            shutil.copyfileobj(f, g)
        raw.append(dst)
    if convert_mnist_data.main([*raw, out]) not in (0, None):
        raise RuntimeError("convert_mnist_data failed")
    return out


def _picture(rng, size):
    """A photo-like 8-bit BGR picture: smooth colour fields, edges and mild sensor noise."""
    from caffe.data.image import resize_linear
    coarse = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    img = resize_linear(coarse, size, size).astype(np.int16)
    yy, xx = np.mgrid[:size, :size]
    img += (40 * np.sin(xx / rng.uniform(3, 20) + yy / rng.uniform(3, 20)))[..., None] \
        .astype(np.int16)
    img += rng.normal(0, 6, img.shape).astype(np.int16)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_lmdb(folder, count=512, size=256, backend="lmdb", encoded=True):
    """`count` size x size JPEGs put in a database by convert_imageset (--encoded by default)
    and their mean by compute_image_mean; returns (database, mean.binaryproto)."""
    from caffe.data.image import encode_image
    from caffe.tools import compute_image_mean, convert_imageset
    name = f"jpeg{size}_{count}_{backend}{'_enc' if encoded else '_raw'}"
    out, mean = os.path.join(folder, name), os.path.join(folder, name + "_mean.binaryproto")
    if os.path.exists(mean):
        return out, mean
    images = os.path.join(folder, f"jpeg{size}_{count}")
    os.makedirs(images, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(count):
        path = os.path.join(images, f"{i:05d}.jpg")
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(encode_image(_picture(rng, size), "jpg"))
        lines.append(f"{i:05d}.jpg {i % 1000}\n")
    listing = os.path.join(folder, f"jpeg{size}_{count}.txt")
    with open(listing, "w") as f:
        f.writelines(lines)
    flags = ["--encoded"] if encoded else []
    if convert_imageset.main([*flags, f"--backend={backend}", images + "/", listing, out]) \
            not in (0, None):
        raise RuntimeError("convert_imageset failed")
    if compute_image_mean.main([f"--backend={backend}", out, mean]) not in (0, None):
        raise RuntimeError("compute_image_mean failed")
    return out, mean
