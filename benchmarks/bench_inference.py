"""Inference speed: pycaffe against OpenCV dnn (cv2.dnn.readNetFromCaffe, the same files) and
ONNX Runtime (on pycaffe's own export, caffe.export.to_onnx), side by side in one process.

    .venv/bin/python -m benchmarks.bench_inference --quick        # < 3 min on 2 cores
    .venv/bin/python -m benchmarks.bench_inference                # the whole corpus
    .venv/bin/python -m benchmarks.bench_inference --nets resnet50,mtcnn_pnet --batch 1 \\
        --threads 1,2 --busy 0,1 --json out.json

For every net of benchmarks/inference_nets.py (random weights, fixed seed) and batch size, the
three engines first run the same input and their outputs must agree (max |a - b| / max(1,
max |b|) <= --tolerance; an engine that disagrees, or that cannot load the net, is left out
of the timing and its cell says why). Then, for every thread count and quiet / busy setting,
the engines are timed in ABBA order (A B C, then C B A, ...) so that load from other
processes falls on all of them alike: the median wall time of one forward after warm-up.
"busy" rows run beside a spawned process that keeps one core busy (a second job on the
machine). pycaffe's times are `net.forward()` with the inputs set, as users call it.

Printed per row: the times (ms), pycaffe's time over OpenCV's, over ORT's and over the faster
of the two; then per setting the median and geometric mean of those ratios (all nets, and the
nets OpenCV runs in < 10 ms). Peak memory (--memory, on unless --quick): the growth of the
peak RSS (VmHWM, reset after the imports) over loading the batch-1 files and three forwards,
each engine in a fresh process. --compare-policy adds pycaffe with CAFFE_THREAD_POLICY=fixed
(caffe/thread_policy.py) to the multi-thread rows, --compare-plain pycaffe layer by layer
(Net.optimize = False: no inference program, caffe/net_inference.py), both timed in the same
ABBA rounds.
"""
import argparse
import json
import math
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import inference_nets as corpus

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("pycaffe", "opencv", "ort")
FIXED = "pycaffe-fixed"     # --compare-policy: pycaffe on torch's thread count for every layer
PLAIN = "pycaffe-plain"     # --compare-plain: pycaffe layer by layer (Net.optimize = False)
QUICK_NETS = ("mtcnn_pnet", "siamese", "srcnn", "cifar10_quick", "squeezenet_v1.1",
              "mobilenet_v1", "shufflenet_g3")
SMALL_MS = 10.0     # "small" nets: OpenCV runs them faster than this


# -- engines ----------------------------------------------------------------------------------
class Engines:
    """The three engines on one net and batch size, with one input."""

    def __init__(self, entry, batch, folder):
        import cv2
        self.entry, self.batch, self.folder = entry, batch, Path(folder)
        self.net, self.proto, self.weights = corpus.build(entry, batch, folder)
        self.x = corpus.inputs(self.net)
        np.savez(self.folder / f"{entry.name}_b{batch}_input.npz", **self.x)
        self.outputs = list(self.net.outputs)
        self.cv = cv2.dnn.readNetFromCaffe(str(self.proto), str(self.weights))
        self.onnx, self.sessions, self.refused = None, {}, {}
        try:
            from caffe.export import ExportError, to_onnx
            self.onnx = str(self.folder / f"{entry.name}_b{batch}.onnx")
            try:
                to_onnx(self.net, self.onnx)
            except ExportError as e:
                self.onnx = None
                self.refused["ort"] = f"export refused: {str(e).split(':')[0]}"
        except ImportError as e:
            self.onnx = None
            self.refused["ort"] = f"no onnx: {e}"

    def session(self, threads):
        import onnxruntime as ort
        if threads not in self.sessions:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            self.sessions[threads] = ort.InferenceSession(
                self.onnx, opts, providers=["CPUExecutionProvider"])
        return self.sessions[threads]

    def runner(self, engine, threads):
        """A no-argument callable running one forward; returns the outputs {name: array}."""
        if engine == PLAIN:
            import caffe
            net = caffe.Net(str(self.proto), str(self.weights), caffe.TEST)
            net.optimize = False
            for name, value in self.x.items():
                net.blobs[name].data[...] = value
            return lambda: {n: v for n, v in net.forward().items() if n in self.outputs}
        if engine in ("pycaffe", FIXED):
            from caffe import thread_policy
            for name, value in self.x.items():
                self.net.blobs[name].data[...] = value
            chosen = "fixed" if engine == FIXED else None

            def run():
                thread_policy.set_policy(chosen)
                try:
                    out = self.net.forward()
                finally:
                    thread_policy.set_policy(None)
                return {n: out[n] for n in self.outputs}
            return run
        if engine == "opencv":
            cv = self.cv

            def run():
                for name, value in self.x.items():
                    cv.setInput(value, name)
                return dict(zip(self.outputs, cv.forward(self.outputs)))
            return run
        sess = self.session(threads)
        names = [o.name for o in sess.get_outputs()]
        feed = {i.name: self.x[i.name] for i in sess.get_inputs()}
        return lambda: dict(zip(names, sess.run(names, feed)))

    def check(self, tolerance):
        """{engine: relative error against pycaffe} (inf where an output is missing)."""
        ours = self.runner("pycaffe", 1)()
        ours = {n: np.array(v) for n, v in ours.items()}
        errors = {"pycaffe": 0.0}
        for engine in ENGINES[1:]:
            if engine in self.refused:
                continue
            try:
                theirs = self.runner(engine, 1)()
            except Exception as e:      # an engine that cannot run the net: say so, go on
                self.refused[engine] = f"fails: {type(e).__name__}: {str(e)[:80]}"
                continue
            err = max((corpus.relative_error(ours[n], theirs[n], n)
                       if n in theirs else math.inf) for n in ours)
            errors[engine] = err
            if not err <= tolerance:
                self.refused[engine] = f"disagrees: {err:.1e}"
        return errors


# -- timing -------------------------------------------------------------------------------
def set_threads(threads):
    import cv2
    import torch
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def time_abba(runners, budget, min_reps, max_reps, warmup=2):
    """{engine: median seconds}: engines alternated A B C / C B A in one process."""
    order = list(runners)
    for _ in range(warmup):
        for e in order:
            runners[e]()
    start = time.perf_counter()
    for e in order:
        runners[e]()
    per_round = time.perf_counter() - start
    reps = max(min_reps, min(max_reps, int(budget / max(per_round, 1e-6))))
    times = {e: [] for e in order}
    for r in range(reps):
        for e in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            runners[e]()
            times[e].append(time.perf_counter() - t)
    return {e: statistics.median(v) for e, v in times.items()}, reps


def _burn(stop):
    while not stop.is_set():
        for _ in range(100000):
            pass


class Busy:
    """A spawned process keeping one core busy while the `with` block runs."""

    def __init__(self, on):
        self.on, self.proc = on, None

    def __enter__(self):
        if self.on:
            ctx = multiprocessing.get_context("spawn")
            self.stop = ctx.Event()
            self.proc = ctx.Process(target=_burn, args=(self.stop,), daemon=True)
            self.proc.start()
            time.sleep(0.2)
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.stop.set()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.terminate()


# -- memory -------------------------------------------------------------------------------
def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def rss_mark():
    """The resident set now (KiB), with the peak reset to it: imports leave a transient
    high-water mark that would hide a small net's growth. Without /proc (not Linux): the
    peak so far."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")        # resets VmHWM to VmRSS
        return _status_kb("VmRSS")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_rss():
    try:
        return _status_kb("VmHWM")
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child_memory(name, engine, folder):
    """Peak RSS growth (MiB) of loading `engine` on the net's batch-1 files in `folder` (those
    Engines wrote) and running three forwards."""
    import cv2  # noqa: F401  (imports before the baseline, for every engine alike)
    import onnxruntime  # noqa: F401
    import caffe  # noqa: F401
    set_threads(1)
    folder = Path(folder)
    proto, weights = folder / f"{name}_b1.prototxt", folder / f"{name}.caffemodel"
    x = dict(np.load(folder / f"{name}_b1_input.npz"))
    base = rss_mark()
    if engine == "pycaffe":
        net = caffe.Net(str(proto), str(weights), caffe.TEST)
        run = lambda: net.forward(**x)  # noqa: E731
    elif engine == "opencv":
        cv = cv2.dnn.readNetFromCaffe(str(proto), str(weights))

        def run():
            for k, v in x.items():
                cv.setInput(v, k)
            cv.forward()
    else:
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        sess = onnxruntime.InferenceSession(str(folder / f"{name}_b1.onnx"), opts,
                                            providers=["CPUExecutionProvider"])
        run = lambda: sess.run(None, x)  # noqa: E731
    for _ in range(3):
        run()
    return (peak_rss() - base) / 1024


def measure_memory(name, engine, folder):
    """child_memory in a fresh process; None where the engine cannot run the net."""
    cmd = [sys.executable, "-m", "benchmarks.bench_inference", "--child-memory",
           f"{name},{engine},{folder}"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


# -- the table ----------------------------------------------------------------------------
def geomean(values):
    values = [v for v in values if v and math.isfinite(v)]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else math.nan


def ratio(a, b):
    return a / b if a and b else math.nan


def fmt(v, digits=2):
    return "—" if v is None or not math.isfinite(v) else f"{v:.{digits}f}"


def row_ratios(times):
    ours, cv, ort = (times.get(e) for e in ENGINES)
    best = min((t for t in (cv, ort) if t), default=None)
    return ratio(ours, cv), ratio(ours, ort), ratio(ours, best)


def summarize(rows, label):
    lines = []
    for subset, keep in (("all nets", lambda r: True),
                         (f"OpenCV < {SMALL_MS:g} ms", lambda r: r["times"].get("opencv")
                          and r["times"]["opencv"] * 1e3 < SMALL_MS)):
        chosen = [r for r in rows if keep(r)]
        if not chosen:
            continue
        cols = list(zip(*(row_ratios(r["times"]) for r in chosen)))
        parts = []
        for name, values in zip(("/opencv", "/ort", "/best"), cols):
            finite = [v for v in values if math.isfinite(v)]
            med = statistics.median(finite) if finite else math.nan
            worst = max(finite) if finite else math.nan
            parts.append(f"{name} median {fmt(med)} geomean {fmt(geomean(finite))} "
                         f"worst {fmt(worst)}")
        lines.append(f"  {label}, {subset} ({len(chosen)}): " + "; ".join(parts))
    return lines


def markdown(rows):
    """The rows of a --json file as README tables: one per batch size, a row per net, for
    each thread count and quiet / busy setting pycaffe's ms and its ratios to OpenCV and ORT."""
    lines = []
    settings = sorted({(r["threads"], r["busy"]) for r in rows})
    for batch in sorted({r["batch"] for r in rows}):
        head = "| net | " + " | ".join(
            f"{t}t {'busy' if b else 'quiet'}: ms (OpenCV, ORT) / x OpenCV / x ORT"
            for t, b in settings) + " |"
        lines += [f"\nBatch {batch}:\n", head, "|---" * (len(settings) + 1) + "|"]
        by_net = {}
        for r in rows:
            if r["batch"] == batch:
                by_net.setdefault(r["net"], {})[(r["threads"], r["busy"])] = r
        for net, cells in by_net.items():
            out = []
            for key in settings:
                r = cells.get(key)
                if r is None:
                    out.append("")
                    continue
                t = r["times"]
                ours, cv, ort = (t.get(e) for e in ENGINES)
                out.append(f"{fmt(ours * 1e3, 1)} ({fmt((cv or math.nan) * 1e3, 1)}, "
                           f"{fmt((ort or math.nan) * 1e3, 1)}) / {fmt(ratio(ours, cv))} / "
                           f"{fmt(ratio(ours, ort))}")
            lines.append(f"| {net} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def parse_list(text, cores):
    return [cores if v == "all" else int(v) for v in text.split(",") if v]


def main(argv=None):
    cores = len(os.sched_getaffinity(0))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"nets {','.join(QUICK_NETS)}, batch 1, short timings")
    ap.add_argument("--nets", help="comma-separated corpus names (default: all; --list)")
    ap.add_argument("--list", action="store_true", help="print the corpus and exit")
    ap.add_argument("--batch", default="1,16")
    ap.add_argument("--threads", default="1,all", help="'all' = this process's CPUs")
    ap.add_argument("--busy", default="0,1", help="0: quiet, 1: beside a CPU burner")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds of timing per net and setting (default 4, --quick 1)")
    ap.add_argument("--min-reps", type=int, default=5)
    ap.add_argument("--max-reps", type=int, default=200)
    ap.add_argument("--tolerance", type=float, default=1e-3)
    ap.add_argument("--memory", type=int, default=None,
                    help="1: peak memory per engine at batch 1 (default: on unless --quick)")
    ap.add_argument("--compare-policy", action="store_true",
                    help="also time pycaffe with CAFFE_THREAD_POLICY=fixed (torch's thread "
                         "count for every layer) in the same ABBA rounds")
    ap.add_argument("--compare-plain", action="store_true",
                    help="also time pycaffe layer by layer (Net.optimize = False, no "
                         "inference program) in the same ABBA rounds")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--markdown", metavar="JSON", help="print a --json file's rows as tables")
    ap.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.markdown:
        print(markdown(json.loads(Path(args.markdown).read_text())))
        return
    if args.child_memory:
        name, engine, folder = args.child_memory.split(",", 2)
        print(json.dumps({"peak_mb": child_memory(name, engine, folder)}))
        return
    if args.list:
        for e in corpus.CORPUS:
            print(f"{e.name:18s} {'small ' if e.small else ''}{'heavy ' if e.heavy else ''}"
                  f"{e.note}")
        return
    names = args.nets.split(",") if args.nets else \
        list(QUICK_NETS) if args.quick else [e.name for e in corpus.CORPUS]
    unknown = [n for n in names if n not in corpus.NETS]
    if unknown:
        ap.error(f"unknown nets {unknown}; --list shows the corpus")
    batches = [int(b) for b in args.batch.split(",")] if not (args.quick and args.batch == "1,16") \
        else [1]
    threads = parse_list(args.threads, cores)
    busy = [bool(int(b)) for b in args.busy.split(",")]
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 4.0)
    memory = args.memory if args.memory is not None else not args.quick

    import caffe
    import cv2
    import onnxruntime
    import torch
    print(f"# bench_inference: torch {torch.__version__}, OpenCV {cv2.__version__}, "
          f"onnxruntime {onnxruntime.__version__}, pycaffe {caffe.__version__}; "
          f"{cores} CPUs; load {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}", flush=True)
    from caffe import thread_policy
    print(f"# pycaffe thread policy: {thread_policy.policy()}"
          + (f" (and {FIXED} alongside)" if args.compare_policy else ""), flush=True)
    engines = ENGINES + ((FIXED,) if args.compare_policy else ()) + \
        ((PLAIN,) if args.compare_plain else ())
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for batch in batches:
            for name in names:
                entry = corpus.NETS[name]
                if batch > 1 and entry.heavy and not args.nets:
                    continue
                eng = Engines(entry, batch, folder)
                errors = eng.check(args.tolerance)
                notes = "; ".join(f"{e}: {why}" for e, why in eng.refused.items())
                print(f"{name} batch {batch}: agreement "
                      + ", ".join(f"{e} {v:.1e}" for e, v in errors.items() if e != "pycaffe")
                      + (f" ({notes})" if notes else ""), flush=True)
                for n_threads in threads:
                    set_threads(n_threads)
                    # The policy changes nothing on one thread: no FIXED column there.
                    runners = {e: eng.runner(e, n_threads) for e in engines
                               if e not in eng.refused and (e != FIXED or n_threads > 1)}
                    for is_busy in busy:
                        with Busy(is_busy):
                            times, reps = time_abba(runners, budget, args.min_reps,
                                                    args.max_reps)
                        row = {"net": name, "batch": batch, "threads": n_threads,
                               "busy": is_busy, "times": times, "reps": reps,
                               "errors": errors, "notes": notes,
                               "load": os.getloadavg()[0]}
                        results.append(row)
                        r = row_ratios(times)
                        print(f"  {name:16s} b{batch:<2d} t{n_threads} "
                              f"{'busy ' if is_busy else 'quiet'} "
                              + " ".join(f"{e} {fmt(times.get(e, math.nan) * 1e3)} ms"
                                         for e in engines if e in times or e != FIXED)
                              + f" | x opencv {fmt(r[0])} x ort {fmt(r[1])} x best {fmt(r[2])}"
                              f" ({reps} reps)", flush=True)
                del eng
        if memory:
            print("\n# peak memory (MiB of peak-RSS growth: loading the net and three "
                  "forwards, batch 1, one thread, a fresh process each)")
            for name in names:
                if not (Path(folder) / f"{name}_b1_input.npz").exists():
                    Engines(corpus.NETS[name], 1, folder)
                mem = {e: measure_memory(name, e, folder) for e in ENGINES}
                print(f"  {name:16s} " + " ".join(f"{e} {fmt(v, 0)}" for e, v in mem.items()),
                      flush=True)
                for r in results:
                    if r["net"] == name:
                        r["memory_mb"] = mem
    print("\n# summary: pycaffe's time / the other engine's (median, geometric mean, worst)")
    for batch in batches:
        for n_threads in threads:
            for is_busy in busy:
                rows = [r for r in results if (r["batch"], r["threads"], r["busy"])
                        == (batch, n_threads, is_busy)]
                label = f"batch {batch}, {n_threads} thread(s), {'busy' if is_busy else 'quiet'}"
                for line in summarize(rows, label):
                    print(line)
    for wanted, other, title in ((args.compare_plain, PLAIN, "the inference program"),
                                 (args.compare_policy, FIXED, "pycaffe's thread policy")):
        if not wanted:
            continue
        print(f"\n# {title}: pycaffe's time / {other}'s (median, best, worst)")
        for batch in batches:
            for n_threads in threads:
                for is_busy in busy:
                    values = [r["times"]["pycaffe"] / r["times"][other] for r in results
                              if (r["batch"], r["threads"], r["busy"]) == (batch, n_threads,
                                                                          is_busy)
                              and other in r["times"]]
                    if values:
                        print(f"  batch {batch}, {n_threads} thread(s), "
                              f"{'busy' if is_busy else 'quiet'}: median "
                              f"{fmt(statistics.median(values))}, best {fmt(min(values))}, "
                              f"worst {fmt(max(values))}")
    # The Python API on a busy machine: N threads against its own one-thread time.
    if 1 in threads and len(threads) > 1:
        for batch in batches:
            for is_busy in busy:
                for n_threads in [t for t in threads if t != 1]:
                    own = []
                    for r in results:
                        if (r["batch"], r["busy"], r["threads"]) != (batch, is_busy, n_threads):
                            continue
                        one = [q for q in results if (q["net"], q["batch"], q["busy"],
                                                      q["threads"]) == (r["net"], batch,
                                                                        is_busy, 1)]
                        if one:
                            own.append(r["times"]["pycaffe"] / one[0]["times"]["pycaffe"])
                    if own:
                        print(f"  pycaffe {n_threads} threads / its 1 thread, batch {batch}, "
                              f"{'busy' if is_busy else 'quiet'}: median "
                              f"{fmt(statistics.median(own))}, worst {fmt(max(own))}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
