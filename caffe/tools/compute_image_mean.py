"""compute_image_mean: the mean image of a database of Datum records, as a .binaryproto.

    compute_image_mean [FLAGS] INPUT_DB [OUTPUT_FILE]

The mean is a 1 x C x H x W BlobProto (legacy num/channels/height/width fields, float data),
accumulated in float32 record by record and divided by the count, exactly as BVLC computes it;
encoded records are decoded first. The per-channel means are logged.
"""
import logging

import numpy as np
from tqdm import tqdm

from .. import formats
from .gflags import Parser, tool_main
from ..data.db import datum_to_array, open_db, parse_datum
from ..errors import DataError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="compute_image_mean", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input_db", metavar="INPUT_DB")
    p.add_argument("output_file", metavar="OUTPUT_FILE", nargs="?")
    p.add_argument("--backend", default="lmdb", help="the backend {leveldb, lmdb} containing "
                   "the images (default lmdb)")
    return p


def compute_mean(path, backend="lmdb"):
    """The mean image of a database as a C x H x W float32 array."""
    total, count = None, 0
    with open_db(path, backend, "r") as db:
        for key, value in tqdm(db, desc="compute_image_mean", unit="img", disable=None):
            image = datum_to_array(parse_datum(value, key), key)
            if total is None:
                total = np.zeros(image.shape, dtype=np.float32)
            elif image.shape != total.shape:
                raise DataError(f"record '{key.decode(errors='replace')}' is "
                                f"{'x'.join(map(str, image.shape))} but the first record is "
                                f"{'x'.join(map(str, total.shape))}; all images need one size")
            # Caffe adds each record into a float sum, so float32 it is.
            total += image.astype(np.float32)
            count += 1
            if count % 10000 == 0:
                log.info("Processed %d files.", count)
    if not count:
        raise DataError(f"database '{path}' is empty")
    if count % 10000:
        log.info("Processed %d files.", count)
    return total / np.float32(count)


def mean_to_blob(mean):
    blob = caffe_pb2.BlobProto()
    blob.num = 1
    blob.channels, blob.height, blob.width = mean.shape
    blob.data.extend(mean.ravel().tolist())
    return blob


def compute(args):
    mean = compute_mean(args.input_db, args.backend)
    if args.output_file:
        log.info("Write to %s", args.output_file)
        formats.write_binary_proto(args.output_file, mean_to_blob(mean))
    log.info("Number of channels: %d", mean.shape[0])
    for c, value in enumerate(mean.reshape(mean.shape[0], -1).astype(np.float64).mean(axis=1)):
        log.info("mean_value channel [%d]: %g", c, value)
    return 0


main = tool_main(parser, compute)


if __name__ == "__main__":
    raise SystemExit(main())
