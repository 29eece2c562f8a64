"""What the network costs: data-parallel SGD of CaffeNet-size gradients on 1 and 2 hosts.

Two hosts are network namespaces joined by a veth pair (tests.netns, needs root),
shaped with `tc netem` (rate and delay) where the kernel has sch_netem, else `tc tbf` (rate
only: the delay is then not applied, and the table says so). The net has CaffeNet's fully
connected stack (fc6 9216x4096, fc7 4096x4096, fc8 4096x1000) behind a 2.4M-parameter layer
standing in for the convolutions: 61M learned parameters, 233 MiB of float gradients per step.

For each link, bucket size and overlap (layer_wise_reduce), it prints images/s (both hosts'
images), the step time, the all-reduce time left exposed after backward (the share of the
step spent waiting for gradients) and a bare all-reduce of all gradients, next to the 1-host
images/s measured in the same run.

    sudo .venv/bin/python benchmarks/bench_network.py [--batch 16] [--iters 4]
         [--links none,1gbit:0.5,10gbit:0.1] [--buckets 4,25,1000] [--json out.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NET = """name: "caffenet_gradients"
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: %(batch)d dim: 256 } shape { dim: %(batch)d }
                           data_filler { type: "gaussian" std: 1 }
                           data_filler { type: "constant" value: 3 } } }
layer { name: "convs" type: "InnerProduct" bottom: "data" top: "convs"
        inner_product_param { num_output: 9216 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu5" type: "ReLU" bottom: "convs" top: "convs" }
layer { name: "fc6" type: "InnerProduct" bottom: "convs" top: "fc6"
        inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu6" type: "ReLU" bottom: "fc6" top: "fc6" }
layer { name: "fc7" type: "InnerProduct" bottom: "fc6" top: "fc7"
        inner_product_param { num_output: 4096 weight_filler { type: "gaussian" std: 0.005 } } }
layer { name: "relu7" type: "ReLU" bottom: "fc7" top: "fc7" }
layer { name: "fc8" type: "InnerProduct" bottom: "fc7" top: "fc8"
        inner_product_param { num_output: 1000 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc8" bottom: "label" top: "loss" }
"""
SOLVER = """type: "SGD" base_lr: 0.0001 momentum: 0.9 lr_policy: "fixed" random_seed: 1
solver_mode: CPU display: 0 max_iter: 1000000 layer_wise_reduce: %(overlap)s
"""


# -- one worker (run by torchrun on each host, or alone for the 1-host row) ----------------------
def worker(args):
    import torch
    import torch.distributed as dist
    from caffe import parallel
    from caffe.formats import parse_text
    from caffe.proto import caffe_pb2
    from caffe.solvers import get_solver

    torch.set_num_threads(args.threads)
    env = parallel.env_world()
    w = parallel.init_worker() if env else None
    results = []

    class Timed(parallel.DataParallel):
        waited = 0.0

        def on_gradients_ready(self):
            t = time.perf_counter()
            super().on_gradients_ready()
            self.waited += time.perf_counter() - t

    # First each host alone (no exchange), while the other does the same: the 1-host figure
    # under the very same contention for the cores as the 2-host rows that follow.
    configs = [(None, True)] + ([(mb, overlap) for mb in args.buckets
                                 for overlap in (True, False)] if w else [])
    for mb, overlap in configs:
        param = parse_text(SOLVER % {"overlap": "true" if overlap else "false"},
                           caffe_pb2.SolverParameter())
        parse_text(NET % {"batch": args.batch}, param.net_param)
        solver = get_solver(param)
        sync = None
        if w and mb is not None:
            sync = Timed(solver, bucket_mb=mb)
            sync.broadcast()
        solver.step(1)                                  # warm-up: buffers, connections
        if sync:
            sync.waited = 0.0
        t = time.perf_counter()
        solver.step(args.iters)
        step = (time.perf_counter() - t) / args.iters
        row = {"bucket_mb": mb, "overlap": overlap, "step_s": step,
               "images_per_s": args.batch * (w.world if sync else 1) / step,
               "params": sum(b.count() for b in solver.net.learnable_params)}
        if sync:
            row["exposed_allreduce_s"] = sync.waited / args.iters
            row["buckets"] = len(sync.buckets)
        results.append(row)
        del solver, sync
    if w:
        flat = torch.zeros(results[0]["params"])
        dist.all_reduce(flat, group=w.group)
        t = time.perf_counter()
        for _ in range(2):
            dist.all_reduce(flat, group=w.group)
        bare = (time.perf_counter() - t) / 2
        for row in results:
            row["bare_allreduce_s"] = bare
    if not w or w.rank == 0:
        Path(args.out).write_text(json.dumps(results))
    if w:
        w.close()


# -- the driver ----------------------------------------------------------------------------------
def run_hosts(hosts, args, out):
    torchrun = str(Path(sys.executable).with_name("torchrun"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(args.threads))
    common = ["--worker", "--out", str(out), "--batch", str(args.batch), "--iters",
              str(args.iters), "--threads", str(args.threads),
              "--buckets", ",".join(map(str, args.buckets))]
    procs = [hosts.popen(r, [torchrun, "--nnodes", "2", "--nproc-per-node", "1",
                             "--node-rank", str(r), "--rdzv-endpoint", f"{hosts.addr[0]}:29400",
                             __file__, *common], env=env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    errors = [p.communicate(timeout=3600)[1] for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a host failed:\n" + "\n".join(e[-3000:] for e in errors))
    return json.loads(out.read_text())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="")
    ap.add_argument("--batch", type=int, default=16, help="images per host and step")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per host")
    ap.add_argument("--links", default="none,1gbit:0.5,10gbit:0.1",
                    help="rate:delay_ms list; none = the bare veth")
    ap.add_argument("--buckets", default="4,25,1000", help="bucket sizes in MiB to try")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    args.buckets = [float(b) for b in str(args.buckets).split(",")]
    if args.worker:
        return worker(args)

    from tests.netns import NetnsUnavailable, TwoHosts
    tmp = Path(tempfile.mkdtemp())
    try:
        hosts = TwoHosts.create("pcbench")
    except NetnsUnavailable as e:
        raise SystemExit(f"{e}: run as root with iproute2")
    rows = []
    try:
        for link in args.links.split(","):
            rate, _, delay = link.partition(":")
            rate = None if rate == "none" else rate
            kind = hosts.shape(rate, float(delay) if delay else None) if rate else "none"
            if kind is None:
                raise SystemExit("neither tc netem nor tc tbf works on this kernel")
            label = "veth" if rate is None else rate + (
                f" + {delay} ms" if kind == "netem" else f" (tbf, no {delay} ms)")
            alone, *two = run_hosts(hosts, args, tmp / "two.json")
            for row in two:
                rows.append(dict(row, link=label, qdisc=kind, alone=alone))
    finally:
        hosts.close()

    params = rows[0]["params"]
    print(f"CaffeNet-size gradients ({params / 1e6:.1f}M params, {params * 4 / 2 ** 20:.0f} "
          f"MiB), batch {args.batch} per host, {args.threads} thread(s) per host, "
          f"{args.iters} timed iterations")
    print(f"{'link':<26}{'bucket':>8}{'overlap':>8}{'1 host':>8}{'2 hosts':>9}{'speed-up':>9}"
          f"{'step s':>8}{'all-reduce':>11}{'share':>7}{'bare AR s':>10}")
    for r in rows:
        one = r["alone"]["images_per_s"]
        print(f"{r['link']:<26}{r['bucket_mb']:>6g}MB{'yes' if r['overlap'] else 'no':>8}"
              f"{one:>8.1f}{r['images_per_s']:>9.1f}{r['images_per_s'] / one:>9.2f}"
              f"{r['step_s']:>8.2f}{r['exposed_allreduce_s']:>10.2f}s"
              f"{r['exposed_allreduce_s'] / r['step_s']:>7.0%}{r['bare_allreduce_s']:>10.2f}")
    print("images/s: both hosts' images; 1 host: each host alone, at the same time, with no "
          "exchange; all-reduce: the wait for gradients after backward (its share of the step); "
          "bare AR: one all-reduce of every gradient.")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
