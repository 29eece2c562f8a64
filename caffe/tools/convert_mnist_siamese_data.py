"""convert_mnist_siamese_data: MNIST's IDX files into a LevelDB of image pairs for a siamese net.

    convert_mnist_siamese_data [FLAGS] input_image_file input_label_file output_db_file

As BVLC's examples/siamese tool: as many records as images, each a random pair (i, j) of
images as one 2 x rows x cols Datum (channel 0 image i, channel 1 image j), label 1 when the
two digits are the same and 0 otherwise; keys `%08d`. The pairs are drawn afresh on each
run unless --seed (a pycaffe extension) is given; --backend lmdb (also an extension) writes
an LMDB instead. The input files may be gzip-compressed.
"""
import logging
import os

import numpy as np
from tqdm import tqdm

from .gflags import Parser, tool_main
from ..data.db import open_db
from ..proto import caffe_pb2
from .convert_mnist_data import read_idx

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="convert_mnist_siamese_data", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("image_file", metavar="input_image_file")
    p.add_argument("label_file", metavar="input_label_file")
    p.add_argument("output_db", metavar="output_db_file")
    p.add_argument("--backend", default="leveldb", help="the backend {leveldb, lmdb} for "
                   "storing the result (pycaffe extension; default leveldb, as BVLC)")
    p.add_argument("--seed", type=int, default=None, help="seed of the pair draw "
                   "(pycaffe extension; default: a fresh draw)")
    return p


def write_siamese_db(images, labels, output_db, backend="leveldb", seed=None):
    """len(images) random pairs as 2-channel Datum records; returns the (i, j) indices."""
    num = len(images)
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, num, size=(num, 2)) if num else np.zeros((0, 2), np.int64)
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = 2, images.shape[1], images.shape[2]
    with open_db(output_db, backend, "new") as db:
        for item_id in tqdm(range(num), desc=os.path.basename(str(output_db)), unit="pair",
                            disable=None):
            i, j = pairs[item_id]
            datum.data = images[i].tobytes() + images[j].tobytes()
            datum.label = int(labels[i] == labels[j])
            db.put(f"{item_id:08d}", datum.SerializeToString())
    return pairs


def convert(args):
    images, labels = read_idx(args.image_file, args.label_file)
    log.info("A total of %d items.", len(images))
    log.info("Rows: %d Cols: %d", images.shape[1], images.shape[2])
    write_siamese_db(images, labels, args.output_db, args.backend, args.seed)
    return 0


main = tool_main(parser, convert)


if __name__ == "__main__":
    raise SystemExit(main())
