"""Long-run health: memory of a small net trained for many iterations must not grow.

    .venv/bin/python benchmarks/bench_memory.py                   # 10^5 iterations
    .venv/bin/python benchmarks/bench_memory.py --iterations 3000 --json

The net reads an LMDB through a Data layer (prefetch thread, wrap-around at the end of the
database), has a test net run every `test_interval` iterations and snapshots periodically, so
every part a long `caffe train` exercises is in the loop. The resident set size (RSS) and the
number of live Python objects are sampled every `--every` iterations; after a warm-up the
least-squares slope of each is reported (bytes and objects per iteration). A leak of one small
tensor or one Python object per iteration shows as a clear positive slope.
"""
import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time

import numpy as np

NET = """
name: "memory"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        data_param {{ source: "{db}" backend: LMDB batch_size: 8 }}
        transform_param {{ scale: 0.00390625 mirror: true crop_size: 6 }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        data_param {{ source: "{db}" backend: LMDB batch_size: 8 }}
        transform_param {{ scale: 0.00390625 crop_size: 6 }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include {{ phase: TEST }} }}
"""
SOLVER = """
net: "{net}" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "inv" gamma: 0.0001
power: 0.75 max_iter: {iterations} test_iter: 2 test_interval: 500 display: 100
snapshot: {snapshot} snapshot_prefix: "{prefix}" average_loss: 20 random_seed: 1
"""


def rss_bytes():
    """Resident set size now (Linux /proc; elsewhere the peak, which only goes up)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def make_db(path, records=64):
    from caffe.data.db import array_to_datum, open_db
    rng = np.random.default_rng(0)
    with open_db(path, "lmdb", "new") as db:
        for i in range(records):
            image = rng.integers(0, 256, (1, 8, 8), dtype=np.uint8)
            db.put(f"{i:08d}", array_to_datum(image, i % 3).SerializeToString())


def measure(iterations, every=100, warmup=0.2, folder=None):
    """Train `iterations` steps; returns samples and slopes after the warm-up fraction."""
    import torch

    import caffe
    torch.set_num_threads(1)
    logging.getLogger("caffe").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        db = os.path.join(tmp, "db")
        make_db(db)
        net = os.path.join(tmp, "net.prototxt")
        with open(net, "w") as f:
            f.write(NET.format(db=db))
        solver_path = os.path.join(tmp, "solver.prototxt")
        with open(solver_path, "w") as f:
            f.write(SOLVER.format(net=net, iterations=iterations, prefix=os.path.join(tmp, "s"),
                                  snapshot=max(iterations // 4, 1)))
        solver = caffe.get_solver(solver_path)
        samples = []
        start = time.perf_counter()
        done = 0
        while done < iterations:
            step = min(every, iterations - done)
            solver.step(step)
            done += step
            gc.collect()
            samples.append((done, rss_bytes(), len(gc.get_objects())))
        seconds = time.perf_counter() - start
        for name in os.listdir(tmp):            # snapshots: keep the folder small
            if name.startswith("s_iter_"):
                os.remove(os.path.join(tmp, name))
    steady = samples[int(len(samples) * warmup):]
    x = np.array([s[0] for s in steady], dtype=np.float64)
    rss = np.array([s[1] for s in steady], dtype=np.float64)
    objects = np.array([s[2] for s in steady], dtype=np.float64)
    return {
        "iterations": iterations, "seconds": seconds,
        "rss_start_mb": samples[0][1] / 2 ** 20, "rss_end_mb": samples[-1][1] / 2 ** 20,
        "rss_slope_bytes_per_iter": float(np.polyfit(x, rss, 1)[0]) if len(x) > 1 else 0.0,
        "rss_steady_growth_mb": float(rss.max() - rss[0]) / 2 ** 20 if len(rss) else 0.0,
        "objects_slope_per_iter": float(np.polyfit(x, objects, 1)[0]) if len(x) > 1 else 0.0,
        "objects_start": samples[0][2], "objects_end": samples[-1][2],
        "samples": samples,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--every", type=int, default=0, help="sample every N iterations "
                    "(default: iterations / 100)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    every = args.every or max(args.iterations // 100, 10)
    result = measure(args.iterations, every)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['iterations']} iterations in {result['seconds']:.1f} s "
          f"({result['iterations'] / result['seconds']:.0f} it/s)")
    print(f"RSS {result['rss_start_mb']:.1f} MB after {every} iterations, "
          f"{result['rss_end_mb']:.1f} MB at the end; steady-state growth "
          f"{result['rss_steady_growth_mb']:.2f} MB, slope "
          f"{result['rss_slope_bytes_per_iter']:.2f} bytes/iteration")
    print(f"live Python objects {result['objects_start']} -> {result['objects_end']}, slope "
          f"{result['objects_slope_per_iter']:.4f} objects/iteration")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.exit(main())
