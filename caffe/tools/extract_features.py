"""extract_features: run a net over its data and save blobs as Datum records (float_data).

    extract_features pretrained_net_param feature_extraction_proto_file
        extract_feature_blob_name1[,name2,...] save_feature_dataset_name1[,name2,...]
        num_mini_batches db_type [CPU/GPU] [DEVICE_ID=0]

The net (in TEST phase, so its data layers feed it) is run num_mini_batches times; every item of
every named blob becomes one Datum (channels/height/width from the blob's legacy 4-D shape,
values in float_data) under the key `%010d` (the item's index), one database per blob.
"""
import logging

from .. import common
from .gflags import Parser, tool_main
from ..data.db import open_db
from ..errors import DataError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="extract_features", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("pretrained_net_param")
    p.add_argument("feature_extraction_proto_file")
    p.add_argument("blob_names", metavar="extract_feature_blob_name1[,name2,...]")
    p.add_argument("dataset_names", metavar="save_feature_dataset_name1[,name2,...]")
    p.add_argument("num_mini_batches", type=int)
    p.add_argument("db_type", help="lmdb or leveldb")
    p.add_argument("mode", nargs="?", default="CPU", help="CPU or GPU (default CPU)")
    p.add_argument("device_id", nargs="?", type=int, default=0, help="GPU id (default 0)")
    return p


def extract(args):
    from ..net import Net
    mode = args.mode.upper()
    if mode == "GPU":
        log.info("Using GPU %d", args.device_id)
        common.set_device(args.device_id)
        common.set_mode_gpu()
    elif mode == "CPU":
        log.info("Using CPU")
        common.set_mode_cpu()
    else:
        raise DataError(f"mode must be CPU or GPU, not '{args.mode}'")
    net = Net(args.feature_extraction_proto_file, caffe_pb2.TEST)
    net.copy_from(args.pretrained_net_param)
    blob_names = args.blob_names.split(",")
    dataset_names = args.dataset_names.split(",")
    if len(blob_names) != len(dataset_names):
        raise DataError(f"{len(blob_names)} blob names but {len(dataset_names)} dataset names; "
                        f"give one dataset per blob")
    for name in blob_names:
        if name not in net.blob_index:
            raise DataError(f"unknown feature blob name '{name}' in the network "
                            f"{args.feature_extraction_proto_file}")
    dbs = [open_db(path, args.db_type, "new") for path in dataset_names]
    counts = [0] * len(blob_names)
    log.info("Extracting Features")
    datum = caffe_pb2.Datum()
    try:
        for _ in range(args.num_mini_batches):
            net.forward_prefilled()
            for i, name in enumerate(blob_names):
                blob = net._blobs[net.blob_index[name]]
                values = blob.data.detach().cpu().float().numpy().reshape(blob.shape[0], -1)
                datum.channels = blob.legacy_shape(1)
                datum.height, datum.width = blob.legacy_shape(2), blob.legacy_shape(3)
                for item in values:
                    del datum.float_data[:]
                    datum.float_data.extend(item.tolist())
                    dbs[i].put(f"{counts[i]:010d}", datum.SerializeToString())
                    counts[i] += 1
                    if counts[i] % 1000 == 0:
                        dbs[i].commit()
                        log.info("Extracted features of %d query images for feature blob %s",
                                 counts[i], name)
    finally:
        for db in dbs:
            db.close()
    for name, count in zip(blob_names, counts):
        if count % 1000:
            log.info("Extracted features of %d query images for feature blob %s", count, name)
    log.info("Successfully extracted the features!")
    return 0


main = tool_main(parser, extract)


if __name__ == "__main__":
    raise SystemExit(main())
