"""Model file throughput: caffemodel save/load (binary and HDF5) of a CaffeNet-size model,
and net construction time of ResNet-152.

    .venv/bin/python benchmarks/bench_io.py [--models ../shared/models]
"""
import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

import caffe


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    here = Path(__file__).resolve().parents[1]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=str(here.parent / "shared" / "models"))
    args = ap.parse_args()
    models = Path(args.models)
    torch.manual_seed(0)
    net = caffe.Net(str(models / "bvlc_reference_caffenet.prototxt"), caffe.TEST)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'operation':<36}{'seconds':>10}{'MB/s':>10}")
        for ext in (".caffemodel", ".caffemodel.h5"):
            path = os.path.join(tmp, "caffenet" + ext)
            save = timed(lambda: net.save(path))
            mb = os.path.getsize(path) / 2 ** 20
            load = timed(lambda: net.copy_from(path))
            print(f"{'save ' + ext + f' ({mb:.0f} MB)':<36}{save:>10.3f}{mb / save:>10.1f}")
            print(f"{'load ' + ext + f' ({mb:.0f} MB)':<36}{load:>10.3f}{mb / load:>10.1f}")
    build = timed(lambda: caffe.Net(str(models / "ResNet-152-deploy.prototxt"), caffe.TEST), 2)
    print(f"{'build ResNet-152 (TEST)':<36}{build:>10.3f}")


if __name__ == "__main__":
    main()
