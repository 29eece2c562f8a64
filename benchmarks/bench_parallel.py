"""Data-parallel LeNet training throughput (images/s): 1 worker against several.

Runs `caffe train` on Caffe's LeNet (examples/mnist/lenet_train_test.prototxt, TRAIN side:
LMDB Data layer, scale 1/256, SGD with momentum 0.9 and weight decay 5e-4) with a fixed batch
per worker (weak scaling, as BVLC's multi-GPU training: N workers train on N x batch images per
iteration), and reads the speed from the log's timestamps between the first display after
warm-up and the last. Rows:

    CPU: 1 process with as many torch threads as cores and with cores / N threads, then N
         gloo workers of cores / N threads each, with layer-wise buckets overlapped with
         backward and with one all-reduce after backward; speed-ups are against the faster
         1-process row;
    GPU: 1 GPU, then all of them (NCCL); skipped when no CUDA device is visible.

The data are MNIST's t10k images when ../shared/data/mnist has them, else random digits.

    .venv/bin/python benchmarks/bench_parallel.py [--workers 2] [--iters 200] [--batch 64]
                                                  [--json out.json]
"""
import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from caffe.data import array_to_datum, open_db

ROOT = Path(__file__).resolve().parents[1]

MNIST = ROOT.parent / "shared" / "data" / "mnist"
RECORDS = 4096

LENET = """name: "LeNet"
layer { name: "mnist" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00390625 }
        data_param { source: "%(db)s" backend: LMDB batch_size: %(batch)d } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 20 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        param { lr_mult: 1 } param { lr_mult: 2 }
        convolution_param { num_output: 50 kernel_size: 5 stride: 1
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 500
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        param { lr_mult: 1 } param { lr_mult: 2 }
        inner_product_param { num_output: 10
          weight_filler { type: "xavier" } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""
SOLVER = """net: "%(net)s" type: "SGD" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005
lr_policy: "inv" gamma: 0.0001 power: 0.75 display: %(display)d max_iter: %(iters)d
snapshot_after_train: false random_seed: 1701 layer_wise_reduce: %(layer_wise)s
solver_mode: CPU
"""
DISPLAY = re.compile(r"^I(\d{4} \d\d:\d\d:\d\d\.\d{6}) .*\] Iteration (\d+) \(", re.MULTILINE)


def build_lmdb(path):
    images = labels = None
    if (MNIST / "t10k-images-idx3-ubyte.gz").exists():
        from caffe.tools.convert_mnist_data import read_idx
        images, labels = read_idx(str(MNIST / "t10k-images-idx3-ubyte.gz"),
                                  str(MNIST / "t10k-labels-idx1-ubyte.gz"))
        images, labels = images[:RECORDS], labels[:RECORDS]
        source = "MNIST t10k"
    else:
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (RECORDS, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, RECORDS)
        source = "random digits"
    with open_db(path, "lmdb", "new") as db:
        for i, (image, label) in enumerate(zip(images, labels)):
            db.put(f"{i:08d}", array_to_datum(image[None], int(label)).SerializeToString())
    return source


def images_per_s(log, batch, workers):
    """Images/s between the second display line (after warm-up) and the last one."""
    points = [(datetime.datetime.strptime(t, "%m%d %H:%M:%S.%f"), int(i))
              for t, i in DISPLAY.findall(log)]
    if len(points) < 3:
        raise RuntimeError("too few display lines to time; raise --iters:\n" + log[-3000:])
    (t0, i0), (t1, i1) = points[1], points[-1]
    return (i1 - i0) * batch * workers / (t1 - t0).total_seconds()


def run(folder, args, extra, workers, layer_wise=True, threads=None):
    net = folder / "lenet.prototxt"
    net.write_text(LENET % {"db": folder / "db", "batch": args.batch})
    solver = folder / f"solver_{layer_wise}.prototxt"
    display = max(1, args.iters // 10)
    solver.write_text(SOLVER % {"net": net, "display": display, "iters": args.iters,
                                "layer_wise": str(layer_wise).lower()})
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, "-m", "caffe.tools.caffe", "train", "-solver",
                           str(solver), *extra], cwd=folder, env=env, capture_output=True,
                          text=True, check=False)
    if proc.returncode:
        raise RuntimeError(f"caffe train {' '.join(extra)} failed:\n{proc.stderr[-3000:]}")
    return images_per_s(proc.stderr, args.batch, workers)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="CPU workers to compare with 1")
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--batch", type=int, default=64, help="batch per worker")
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()
    import torch
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = build_lmdb(folder / "db")
        print(f"LeNet, {source}, batch {args.batch} per worker, {args.iters} iterations, "
              f"{os.cpu_count()} CPU cores")
        cores = os.cpu_count() or 1
        share = max(1, cores // args.workers)
        workers = ["-workers", str(args.workers)]
        cases = [("CPU", 1, [], True, cores), ("CPU", 1, [], True, share),
                 ("CPU", args.workers, workers, True, share),
                 ("CPU", args.workers, workers, False, share)]
        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if gpus:
            cases += [("GPU", 1, ["-gpu", "0"], True, None)]
            if gpus > 1:
                cases += [("GPU", gpus, ["-gpu", "all"], True, None)]
        for device, count, extra, layer_wise, threads in cases:
            speed = run(folder, args, extra, count, layer_wise, threads)
            rows.append({"device": device, "workers": count, "threads": threads,
                         "layer_wise_reduce": layer_wise, "images_per_s": round(speed, 1)})
    for r in rows:
        base = max(x["images_per_s"] for x in rows
                   if x["device"] == r["device"] and x["workers"] == 1)
        r["speedup"] = round(r["images_per_s"] / base, 2)
    print(f"{'device':<7}{'workers':>8}{'threads':>8}{'reduce':>12}{'images/s':>10}"
          f"{'speed-up':>10}")
    for r in rows:
        reduce = "layer-wise" if r["layer_wise_reduce"] else "after bwd"
        print(f"{r['device']:<7}{r['workers']:>8}{r['threads'] or '-':>8}"
              f"{reduce if r['workers'] > 1 else '-':>12}{r['images_per_s']:>10.1f}"
              f"{r['speedup']:>9.2f}x")
    if not gpus:
        print("GPU: skipped (no CUDA device visible to PyTorch)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
