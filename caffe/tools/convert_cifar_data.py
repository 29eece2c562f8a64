"""convert_cifar_data: CIFAR-10's binary batches into train and test databases of Datum records.

    convert_cifar_data input_folder output_folder db_type

As BVLC's examples/cifar10 tool: input_folder holds data_batch_1.bin ... data_batch_5.bin and
test_batch.bin (each record a label byte and 3 x 32 x 32 pixel bytes, channel-major);
output_folder receives cifar10_train_<db_type> (keys `%05d`, batch b's item i at
b * 10000 + i) and cifar10_test_<db_type>. db_type is lmdb or leveldb. A batch may hold
fewer than 10000 records (a sample of the data set).
"""
import logging
import os

import numpy as np
from tqdm import tqdm

from .gflags import Parser, tool_main
from ..data.db import open_db
from ..errors import DataError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")

SIZE, IMAGE_BYTES, BATCH_SIZE, TRAIN_BATCHES = 32, 3072, 10000, 5


def parser():
    p = Parser(prog="convert_cifar_data", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input_folder")
    p.add_argument("output_folder")
    p.add_argument("db_type", help="lmdb or leveldb")
    return p


def read_batch(path):
    """(labels, images N x 3 x 32 x 32 uint8) of one CIFAR-10 binary batch file."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"unable to open CIFAR batch file '{path}': {e.strerror}") from None
    record = 1 + IMAGE_BYTES
    if not data or len(data) % record or len(data) // record > BATCH_SIZE:
        raise DataError(f"{path}: {len(data)} bytes is not a CIFAR-10 batch (up to "
                        f"{BATCH_SIZE} records of {record} bytes)")
    rows = np.frombuffer(data, dtype=np.uint8).reshape(-1, record)
    return rows[:, 0], rows[:, 1:].reshape(-1, 3, SIZE, SIZE)


def _write(db, labels, images, first_key, desc):
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = 3, SIZE, SIZE
    for i in tqdm(range(len(labels)), desc=desc, unit="img", disable=None):
        datum.label = int(labels[i].view(np.int8))      # BVLC reads the byte as a char
        datum.data = images[i].tobytes()
        db.put(f"{first_key + i:05d}", datum.SerializeToString())


def convert_dataset(input_folder, output_folder, db_type):
    """Write the train and test databases; returns their paths."""
    train_path = os.path.join(output_folder, f"cifar10_train_{db_type}")
    test_path = os.path.join(output_folder, f"cifar10_test_{db_type}")
    log.info("Writing Training data")
    batches = []
    for b in range(TRAIN_BATCHES):
        batches.append(read_batch(os.path.join(input_folder, f"data_batch_{b + 1}.bin")))
    test = read_batch(os.path.join(input_folder, "test_batch.bin"))
    with open_db(train_path, db_type, "new") as db:
        for b, (labels, images) in enumerate(batches):
            log.info("Training Batch %d", b + 1)
            _write(db, labels, images, b * BATCH_SIZE, f"batch {b + 1}")
    log.info("Writing Testing data")
    with open_db(test_path, db_type, "new") as db:
        _write(db, *test, 0, "test batch")
    return train_path, test_path


def convert(args):
    convert_dataset(args.input_folder, args.output_folder, args.db_type)
    return 0


main = tool_main(parser, convert)


if __name__ == "__main__":
    raise SystemExit(main())
