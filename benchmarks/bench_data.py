"""Data layer throughput (images/s) from an LMDB with the transformer on.

Two workloads, each in a temporary LMDB: MNIST-like (1x28x28, scale) and ImageNet-like
(3x256x256 raw, crop 227 + mirror + mean values, TRAIN), read by a Data layer in a caffe.Net
with the default prefetch (4 batches) and with prefetch 0 (synchronous: decode+transform cost).

    .venv/bin/python benchmarks/bench_data.py [--batches 20] [--device cpu|cuda]
"""
import argparse
import os
import tempfile
import time

import numpy as np
import torch

import caffe
from caffe.data import array_to_datum, open_db
from caffe.formats import parse_text
from caffe.proto import caffe_pb2

WORKLOADS = {
    "mnist 1x28x28": ((1, 28, 28), 64, "scale: 0.00390625"),
    "imagenet 3x256x256": ((3, 256, 256), 32, "crop_size: 227 mirror: true mean_value: 104 "
                                              "mean_value: 117 mean_value: 123"),
}


def build_lmdb(path, shape, count):
    rng = np.random.default_rng(0)
    with open_db(path, "lmdb", "new") as db:
        for i in range(count):
            image = rng.integers(0, 256, shape, dtype=np.uint8)
            db.put(f"{i:08d}", array_to_datum(image, i % 10).SerializeToString())


def throughput(source, batch, transform, prefetch, batches, device):
    text = f"""layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" backend: LMDB batch_size: {batch} prefetch: {prefetch} }}
        transform_param {{ {transform} }} }}"""
    net = caffe.Net(parse_text(text, caffe_pb2.NetParameter()), caffe.TRAIN, device=device)
    net.forward()                                   # warm up: first batch, thread start
    start = time.perf_counter()
    for _ in range(batches):
        net.forward_prefilled()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * batches / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(f"{'workload':<22}{'batch':>6}{'prefetch 4 img/s':>18}{'prefetch 0 img/s':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, batch, transform) in WORKLOADS.items():
            source = os.path.join(tmp, name.split()[0])
            build_lmdb(source, shape, batch * 4)
            rates = [throughput(source, batch, transform, prefetch, args.batches, args.device)
                     for prefetch in (4, 0)]
            print(f"{name:<22}{batch:>6}{rates[0]:>18.0f}{rates[1]:>18.0f}")


if __name__ == "__main__":
    main()
