"""The prepared device check: golden suites on CUDA, then GPU speed against PyTorch and the K40.

    python -m benchmarks.gpu_check [--dry-run] [--out DIR] [--models ../shared/models]

1. Runs the golden layer and solver suites and the whole-net tests under pytest with
   PYCAFFE_TEST_DEVICE=cuda (every device-parametrized test on CUDA, caffe.set_mode_gpu()).
2. Times CaffeNet train and forward (batch 256), GoogLeNet and ResNet-50 train (batch 64), in
   ms per image, fp32 and bf16 (ours: precision="bf16", bf16 nets with float32 master
   weights; PyTorch: fp32 weights under bf16 autocast), ours (caffe.Net / SGDSolver) against the
   hand-written PyTorch models of benchmarks/torch_models.py on the same GPU, alternating the
   two sides' iterations in one process (ABBA) with a CUDA synchronize around each; the nets,
   weights and the before-timing agreement check are benchmarks/run.py's.
3. Writes DIR/gpu_report.md (and prints it), with the ratios and BVLC's K40 figures.

--dry-run does the same on the CPU with tiny nets and batches (the suites then skip cleanly,
which is what it checks); it needs ../shared/models and no network. A full run fits in about
8 minutes on one GPU: the suites get 300 s, each timing cell a few seconds.
"""
import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import run

ROOT = run.ROOT
SUITES = ["tests/layers/test_golden.py", "tests/solvers/test_golden_solvers.py",
          "tests/test_net_run.py", "tests/test_models.py"]
# (name, title, prototxt, batch, train?)
FULL_ROWS = [
    ("caffenet-train", "CaffeNet train", "bvlc_reference_caffenet.prototxt", 256, True),
    ("caffenet-fwd", "CaffeNet forward", "bvlc_reference_caffenet.prototxt", 256, False),
    ("googlenet-train", "GoogLeNet train", "bvlc_googlenet.prototxt", 64, True),
    ("resnet50-train", "ResNet-50 train", "ResNet-50-deploy.prototxt", 64, True),
]
DRY_ROWS = [
    ("lenet-train", "LeNet train (dry)", "lenet.prototxt", 4, True),
    ("cifar10-train", "CIFAR-10 train (dry)", "cifar10_quick.prototxt", 4, True),
    ("caffenet-fwd", "CaffeNet forward (dry)", "bvlc_reference_caffenet.prototxt", 1, False),
]
# BVLC's performance notes (AlexNet/CaffeNet on a K40 with cuDNN), ms per image.
K40_MS = {"caffenet-train": 4.0, "caffenet-fwd": 1.0}
GOAL = 20.0   # issue 17: AlexNet training at least 20x faster per image than the K40


def run_suites(timeout, device_env):
    """pytest over SUITES with PYCAFFE_TEST_DEVICE set; returns (summary line, rc)."""
    env = dict(os.environ, PYCAFFE_TEST_DEVICE=device_env)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", *SUITES]
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                             timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout} s", 124, ""
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    return (lines[-1] if lines else "(no output)"), out.returncode, out.stdout[-4000:]


def sync(dev):
    if dev.type == "cuda":
        import torch
        torch.cuda.synchronize(dev)


def time_row(spec, models, dev, precision, budget):
    """One row, one precision: median seconds per iteration of each side and the check."""
    import torch
    import caffe
    name, title, proto, batch, train = spec
    key = f"gpu-check:{name}"
    run.ROWS[key] = (title, proto, batch, train)
    if dev.type == "cuda":
        caffe.set_mode_gpu()
    try:
        # Ours computes in bf16 with float32 masters (-precision bf16); PyTorch's side is its
        # usual mixed precision, fp32 weights under bf16 autocast.
        net, solver, x, y, ostep = run.build_ours(key, models, train,
                                                  precision if precision == "bf16" else None)
        model, tstep = run.build_torch(key, net)
        model.to(dev)
        tstep.x = x.to(dev)
        tstep.y = None if y is None else y.to(dev)
        autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
        with autocast:
            chk = run.check(key, net, solver, model, tstep)
            steps = {"ours": ostep, "torch": tstep}
            for _ in range(2):
                ostep()
                tstep()
            sync(dev)
            start = time.perf_counter()
            ostep()
            tstep()
            sync(dev)
            reps = max(3, min(50, int(budget / max(time.perf_counter() - start, 1e-6))))
            times = {"ours": [], "torch": []}
            for r in range(reps):
                order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
                for side in order:
                    sync(dev)
                    t = time.perf_counter()
                    steps[side]()
                    sync(dev)
                    times[side].append(time.perf_counter() - t)
        return {side: statistics.median(v) for side, v in times.items()} | {
            "check": chk, "reps": reps}
    finally:
        caffe.set_mode_cpu()
        del run.ROWS[key]


def report(args, dev, suites, rows):
    import torch
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU (dry run)"
    out = [f"# GPU check ({'dry run' if args.dry_run else 'full'})", "",
           f"- device: {name}; torch {torch.__version__}; "
           f"{time.strftime('%Y-%m-%d %H:%M:%S')}", ""]
    out += ["## Golden suites with PYCAFFE_TEST_DEVICE=cuda", "",
            f"`pytest {' '.join(SUITES)}`: **{suites[0]}** (rc {suites[1]})", ""]
    out += ["## Speed (median per iteration, ours and PyTorch alternated in one run)", "",
            "| row | batch | precision | ours ms/image | torch ms/image | ours/torch | check |",
            "|---|---:|---|---:|---:|---:|---|"]
    k40 = []
    for (name_, title, _, batch, _), precision, res in rows:
        if "error" in res:
            out.append(f"| {title} | {batch} | {precision} | error: {res['error']} | | | |")
            continue
        ours, theirs = res["ours"] * 1e3 / batch, res["torch"] * 1e3 / batch
        chk = "dropout" if res["check"] is None else f"{res['check']:.1e}"
        out.append(f"| {title} | {batch} | {precision} | {ours:.3f} | {theirs:.3f} | "
                   f"{ours / theirs:.2f} | {chk} |")
        if name_ in K40_MS and not args.dry_run:
            k40.append((title, precision, ours, K40_MS[name_] / ours))
    out += ["", "check: largest relative difference of outputs (forward) or of loss and "
            "update after one step (train) between the two sides, before timing.", ""]
    out += ["## Against the K40 (BVLC's notes: AlexNet ~4 ms/image learning, ~1 ms/image "
            "inference, cuDNN)", ""]
    if k40:
        for title, precision, ours, speedup in k40:
            verdict = ("meets" if speedup >= GOAL else "misses") if "train" in title else "-"
            out.append(f"- {title} {precision}: {ours:.3f} ms/image, {speedup:.1f}x the K40 "
                       f"(goal {GOAL:.0f}x for training: {verdict})")
    else:
        out.append("- not measured in a dry run")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny nets and batches on the CPU (checks the script, measures nothing)")
    ap.add_argument("--out", default=".", help="folder for gpu_report.md (default: .)")
    ap.add_argument("--models", default=str(ROOT.parent / "shared" / "models"))
    ap.add_argument("--suite-timeout", type=int, default=300)
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timing per cell (default 4, dry run 0.2)")
    args = ap.parse_args(argv)
    import torch
    if args.dry_run:
        dev, specs, budget = torch.device("cpu"), DRY_ROWS, args.budget or 0.2
    else:
        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA device; use --dry-run on a CPU-only machine")
        dev, specs, budget = torch.device("cuda", 0), FULL_ROWS, args.budget or 4.0
        torch.backends.cudnn.benchmark = True
    print("running the golden suites with PYCAFFE_TEST_DEVICE=cuda ...", flush=True)
    summary, rc, tail = run_suites(args.suite_timeout, "cuda")
    print(summary, flush=True)
    rows = []
    for spec in specs:
        for precision in ("fp32", "bf16"):
            try:
                res = time_row(spec, args.models, dev, precision, budget)
            except Exception as exc:   # one failing row must not lose the whole report
                res = {"error": f"{type(exc).__name__}: {exc}".replace("|", "/")[:200]}
            print(spec[1], precision, res, flush=True)
            rows.append((spec, precision, res))
    text = report(args, dev, (summary, rc), rows)
    if rc not in (0, 5):
        text += "\n## pytest output (tail)\n\n```\n" + tail + "\n```\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "gpu_report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)   # atomic: a killed run leaves the previous report whole
    print(text)
    print(f"report written to {path}")
    return rows


if __name__ == "__main__":
    main()
