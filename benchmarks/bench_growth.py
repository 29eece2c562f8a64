"""Cost growth: time per image and peak memory against the batch size, and 1 against 2 workers.

    .venv/bin/python benchmarks/bench_growth.py [--batches 1,8,32,128] [--iters 3]
                                                [--rows caffenet,lenet,workers]

  * CaffeNet forward (deploy net, TEST, MSRA-filled weights): ms per image of
    net.forward_prefilled(), and the peak memory growth of the process (ru_maxrss after the
    iterations minus after the imports), in a fresh process per batch size;
  * LeNet training (SoftmaxWithLoss, SGD momentum 0.9): ms per image of solver.step(1) and
    peak memory, with intermediate diffs recycled (what `caffe train` does) and kept (what
    pycaffe's Solver does, for scripts that read them);
  * `caffe train` on Caffe's LeNet example (LMDB of ../shared/data/mnist, batch 64 per worker)
    with -workers 1 and -workers 2 and caffe.threads' default thread choice: images/s from
    the log's timestamps (first to last "Iteration ... loss" line).
Time per image should stay flat or fall as the batch grows; memory should grow linearly with
the slope of the activations (printed: MB per image between the two largest batches).
"""
import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

MODELS = ROOT.parent / "shared" / "models"


def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind, batch, iters, recycle):
    """One measurement in this (fresh) process; prints a JSON line."""
    import numpy as np
    import caffe
    from benchmarks.run import SOLVER, caffe_net_param
    from caffe.proto import caffe_pb2
    caffe.set_random_seed(1)
    base = peak_mb()
    if kind == "caffenet":
        param = caffe_net_param(str(MODELS / "bvlc_reference_caffenet.prototxt"), batch, False)
        net = caffe.Net(param, caffe.TEST)
        net.blobs["data"].data[...] = np.random.default_rng(0).uniform(
            -1, 1, net.blobs["data"].data.shape)
        run = net.forward_prefilled
    else:
        sp = caffe_pb2.SolverParameter(type="SGD", lr_policy="fixed", max_iter=10 ** 9,
                                       display=0, **SOLVER)
        sp.net_param.CopyFrom(caffe_net_param(str(MODELS / "lenet.prototxt"), batch, True))
        solver = caffe.get_solver(sp)
        solver.net.recycle_diffs = recycle
        net = solver.net
        net.blobs["data"].data[...] = np.random.default_rng(0).uniform(
            0, 1, net.blobs["data"].data.shape)
        net.blobs["label"].data[...] = np.arange(batch) % 10

        def run():
            solver.step(1)
    run()                                               # warm-up: allocations, first touch
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({"ms_per_image": 1e3 * times[len(times) // 2] / batch,
                      "peak_mb": peak_mb() - base}))


def measure(kind, batch, iters, recycle=True):
    out = subprocess.run([sys.executable, __file__, "--child", kind, str(batch), str(iters),
                          str(int(recycle))], capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)))
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def batch_rows(kind, title, batches, iters, variants):
    print(f"\n{title}: ms per image / peak memory growth (MB), median of {iters} iterations")
    head = "| batch |" + "".join(f" {v} ms/image | {v} peak MB |" for v in variants)
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    results = {v: [] for v in variants}
    for batch in batches:
        line = f"| {batch} |"
        for v, recycle in variants.items():
            r = measure(kind, batch, iters, recycle)
            results[v].append(r)
            line += f" {r['ms_per_image']:.2f} | {r['peak_mb']:.0f} |"
        print(line, flush=True)
    if len(batches) > 1:
        for v in variants:
            a, b = results[v][-2], results[v][-1]
            slope = (b["peak_mb"] - a["peak_mb"]) / (batches[-1] - batches[-2])
            print(f"{v}: {slope:.2f} MB per image between batch {batches[-2]} and "
                  f"{batches[-1]}")


def _stamp(line):
    m = re.match(r"I(\d{4} \d\d:\d\d:\d\d\.\d+)", line)
    return datetime.strptime(m.group(1), "%m%d %H:%M:%S.%f") if m else None


def worker_rows(iters):
    from benchmarks import bench_bvlc, datasets
    print(f"\n`caffe train` on Caffe's LeNet example, batch 64 per worker, {iters} iterations, "
          f"default threads (caffe.threads)")
    print("| workers | images/s | vs 1 worker |\n|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        datasets.mnist_lmdb(str(tmp))
        first = None
        for workers in (1, 2):
            solver = bench_bvlc.lenet_files(tmp / f"w{workers}", tmp, iters)
            text = solver.read_text().replace("display: 100", "display: 20")
            text = re.sub(r"test_interval: \d+", "test_interval: 100000", text)
            solver.write_text(text + "test_initialization: false\nsnapshot_after_train: false\n")
            env = {k: v for k, v in os.environ.items()
                   if not k.startswith(bench_bvlc.THREAD_VARS)}
            env.update(PYTHONPATH=str(ROOT), GLOG_logtostderr="1")
            out = subprocess.run([sys.executable, "-m", "caffe.tools.caffe", "train", "-solver",
                                  str(solver), "-workers", str(workers)], cwd=tmp, env=env,
                                 capture_output=True, text=True)
            if out.returncode:
                raise RuntimeError(out.stderr[-3000:])
            lines = [ln for ln in (out.stdout + out.stderr).splitlines()
                     if re.search(r"Iteration \d+.*loss = ", ln)]
            its = [int(re.search(r"Iteration (\d+)", ln).group(1)) for ln in lines]
            span = (_stamp(lines[-1]) - _stamp(lines[0])).total_seconds()
            rate = (its[-1] - its[0]) * 64 * workers / span
            first = first or rate
            print(f"| {workers} | {rate:.0f} | {rate / first:.2f}x |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,8,32,128")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--rows", default="caffenet,lenet,workers")
    ap.add_argument("--worker-iters", type=int, default=200)
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        kind, batch, iters, recycle = args.child
        child(kind, int(batch), int(iters), bool(int(recycle)))
        return 0
    batches = [int(b) for b in args.batches.split(",")]
    rows = args.rows.split(",")
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    if "caffenet" in rows:
        batch_rows("caffenet", "CaffeNet forward", batches, args.iters, {"forward": True})
    if "lenet" in rows:
        batch_rows("lenet", "LeNet train", batches, args.iters,
                   {"diffs recycled": True, "every diff kept": False})
    if "workers" in rows:
        worker_rows(args.worker_iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
