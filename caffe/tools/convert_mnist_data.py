"""convert_mnist_data: MNIST's IDX files into an LMDB/LevelDB of grey 1 x 28 x 28 Datum records.

    convert_mnist_data [FLAGS] input_image_file input_label_file output_db_file

Keys are `%08d` in file order, as BVLC writes them; the input files may be gzip-compressed
(.gz, as distributed). --first_item and --num_items (pycaffe extensions) convert a slice of
the files; build_mnist_lmdbs() makes the train/test LMDB pair of Caffe's LeNet example.
"""
import gzip
import logging
import os

import numpy as np
from tqdm import tqdm

from .gflags import Parser, tool_main
from ..data.db import open_db
from ..errors import DataError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")

IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049
T10K_IMAGES, T10K_LABELS = "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"


def parser():
    p = Parser(prog="convert_mnist_data", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("image_file", metavar="input_image_file")
    p.add_argument("label_file", metavar="input_label_file")
    p.add_argument("output_db", metavar="output_db_file")
    p.add_argument("--backend", default="lmdb", help="the backend {lmdb, leveldb} for storing "
                   "the result (default lmdb)")
    p.add_argument("--first_item", type=int, default=0, help="index of the first image to "
                   "convert (pycaffe extension; default 0)")
    p.add_argument("--num_items", type=int, default=-1, help="how many images to convert "
                   "(pycaffe extension; default: all)")
    return p


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read '{path}': {getattr(e, 'strerror', None) or e}") from None


def read_idx(image_file, label_file):
    """MNIST images (N x rows x cols uint8) and labels (N uint8) from IDX files."""
    images, labels = _read(image_file), _read(label_file)
    header = np.frombuffer(images[:16], dtype=">u4") if len(images) >= 16 else ()
    if len(header) != 4 or header[0] != IMAGE_MAGIC:
        raise DataError(f"{image_file}: incorrect image file magic (not an IDX image file)")
    label_header = np.frombuffer(labels[:8], dtype=">u4") if len(labels) >= 8 else ()
    if len(label_header) != 2 or label_header[0] != LABEL_MAGIC:
        raise DataError(f"{label_file}: incorrect label file magic (not an IDX label file)")
    num, rows, cols = (int(v) for v in header[1:])
    if label_header[1] != num:
        raise DataError(f"{image_file} holds {num} images but {label_file} {label_header[1]} "
                        f"labels")
    if len(images) < 16 + num * rows * cols or len(labels) < 8 + num:
        raise DataError(f"{image_file} or {label_file} is truncated")
    pixels = np.frombuffer(images, dtype=np.uint8, count=num * rows * cols, offset=16)
    return pixels.reshape(num, rows, cols), np.frombuffer(labels, np.uint8, count=num, offset=8)


def write_mnist_db(images, labels, output_db, backend="lmdb"):
    """One Datum per image (channels 1, rows, cols, raw bytes, label), keys %08d."""
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = 1, images.shape[1], images.shape[2]
    with open_db(output_db, backend, "new") as db:
        for item_id in tqdm(range(len(images)), desc=os.path.basename(str(output_db)),
                            unit="img", disable=None):
            datum.data = images[item_id].tobytes()
            datum.label = int(labels[item_id])
            db.put(f"{item_id:08d}", datum.SerializeToString())
    log.info("Processed %d files.", len(images))


def build_mnist_lmdbs(mnist_dir, out_dir, train_count=8000, backend="lmdb"):
    """mnist_train_lmdb (the first train_count images of the t10k set) and mnist_test_lmdb
    (the rest) in out_dir, as the reference LeNet run (golden/formats/bvlc_lenet_run) used.

    Returns the two database paths.
    """
    def find(name):
        for candidate in (name + ".gz", name):
            path = os.path.join(mnist_dir, candidate)
            if os.path.exists(path):
                return path
        raise DataError(f"{mnist_dir} has no {name}(.gz)")
    images, labels = read_idx(find(T10K_IMAGES), find(T10K_LABELS))
    os.makedirs(out_dir, exist_ok=True)
    paths = (os.path.join(out_dir, "mnist_train_lmdb"), os.path.join(out_dir, "mnist_test_lmdb"))
    write_mnist_db(images[:train_count], labels[:train_count], paths[0], backend)
    write_mnist_db(images[train_count:], labels[train_count:], paths[1], backend)
    return paths


def convert(args):
    images, labels = read_idx(args.image_file, args.label_file)
    log.info("A total of %d items.", len(images))
    log.info("Rows: %d Cols: %d", images.shape[1], images.shape[2])
    end = None if args.num_items < 0 else args.first_item + args.num_items
    write_mnist_db(images[args.first_item:end], labels[args.first_item:end], args.output_db,
                   args.backend)
    return 0


main = tool_main(parser, convert)


if __name__ == "__main__":
    raise SystemExit(main())
