"""pycaffe beside BVLC Caffe (the CPU reference in /opt/bvlc), quiet and under load, in one run.

    .venv/bin/python benchmarks/bench_bvlc.py [--repeat 3] [--rows lenet,data,time]
                                             [--iterations 100] [--time-iterations 3]

Rows (each a whole `caffe` command, ours `python -m caffe.tools.caffe`, BVLC's
/opt/bvlc/build/tools/caffe, the two alternated ABBA and repeated; medians are printed):
  * lenet: `caffe train` on Caffe's own examples/mnist LeNet solver and net (from /opt/bvlc/src,
    paths changed, max_iter --iterations) on an LMDB made by our convert_mnist_data from
    ../shared/data/mnist: quiet, beside a plain busy process (one spinning core), and beside a
    second training of the same framework (started first, measured once it has logged
    "Solving"). Wall time and peak memory (ru_maxrss of the process).
  * data: `caffe time` on a net of one Data layer reading an LMDB of 256x256 JPEGs made by
    convert_imageset --encoded, crop 227 + mirror + mean file (compute_image_mean), batch 128,
    TRAIN: images/s from "Average Forward pass", quiet and beside a busy process.
  * time: `caffe time` on CaffeNet, GoogLeNet, ResNet-50 (../shared/models deploy nets):
    "Average Forward-Backward", quiet and beside a busy process.
Neither side gets OMP_*/MKL_* variables from here: each runs with its own defaults (pycaffe's
are chosen by caffe.threads). Without /opt/bvlc the BVLC columns are skipped with a note.
"""
import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from benchmarks import datasets  # noqa: E402

BVLC = Path(os.environ.get("BVLC_ROOT", "/opt/bvlc"))
BVLC_CAFFE = BVLC / "build" / "tools" / "caffe"
MODELS = ROOT.parent / "shared" / "models"
TIME_NETS = {"CaffeNet": "bvlc_reference_caffenet.prototxt",
             "GoogLeNet": "bvlc_googlenet.prototxt", "ResNet-50": "ResNet-50-deploy.prototxt"}
THREAD_VARS = ("OMP_", "MKL_", "KMP_", "OPENBLAS_", "GOTO_", "CAFFE_THREADS")


def clean_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(THREAD_VARS)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["GLOG_logtostderr"] = "1"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(BVLC / "build" / "lib"),
                                                           env.get("LD_LIBRARY_PATH")]))
    return env


def command(side, args):
    if side == "pycaffe":
        return [sys.executable, "-m", "caffe.tools.caffe", *args]
    return [str(BVLC_CAFFE), *args]


def run(cmd, cwd, log_path):
    """Run to the end; (wall seconds, peak RSS MB, log text)."""
    with open(log_path, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=clean_env(), stdout=log,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = Path(log_path).read_text(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{text[-2000:]}")
    return wall, usage.ru_maxrss / 1024, text


class Competitor:
    """A busy process beside the measured one: a spinning core, or a second training."""

    def __init__(self, kind, side=None, folder=None):
        self.kind, self.proc, self.log = kind, None, None
        if kind == "busy":
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        elif kind == "train":
            solver = lenet_files(folder / f"second_{side}", folder, max_iter=10 ** 7)
            self.log = open(folder / f"second_{side}.log", "w")
            self.proc = subprocess.Popen(command(side, ["train", "-solver", str(solver)]),
                                         cwd=folder, env=clean_env(), stdout=self.log,
                                         stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 120
            while "Solving" not in Path(self.log.name).read_text(errors="replace"):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the second training did not start: "
                                       f"{Path(self.log.name).read_text()[-2000:]}")
                time.sleep(0.1)
        time.sleep(0.5)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
        if self.log is not None:
            self.log.close()


def lenet_files(folder, data, max_iter):
    """Caffe's examples/mnist LeNet solver and net with our LMDB and this folder's paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("lenet_iter_*"):     # each run starts afresh
        old.unlink()
    src = BVLC / "src" / "examples" / "mnist"
    lmdb = datasets.mnist_lmdb(str(data))
    net = (src / "lenet_train_test.prototxt").read_text()
    net = net.replace("examples/mnist/mnist_train_lmdb", lmdb) \
        .replace("examples/mnist/mnist_test_lmdb", lmdb)
    (folder / "lenet_train_test.prototxt").write_text(net)
    solver = (src / "lenet_solver.prototxt").read_text()
    solver = solver.replace("examples/mnist/lenet_train_test.prototxt",
                            str(folder / "lenet_train_test.prototxt"))
    solver = solver.replace('snapshot_prefix: "examples/mnist/lenet"',
                            f'snapshot_prefix: "{folder}/lenet"')
    solver = re.sub(r"max_iter: \d+", f"max_iter: {max_iter}", solver)
    solver = solver.replace("solver_mode: GPU", "solver_mode: CPU")
    (folder / "lenet_solver.prototxt").write_text(solver)
    return folder / "lenet_solver.prototxt"


def abba(sides, repeat, measure):
    """measure(side) alternated A B B A ...; {side: [results]}."""
    results = {s: [] for s in sides}
    for r in range(repeat):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            results[side].append(measure(side))
    return results


def median(values):
    return statistics.median(values) if values else float("nan")


def lenet_rows(sides, folder, args):
    rows = {}
    for situation in ("quiet", "busy", "train"):
        def measure(side):
            solver = lenet_files(folder / f"lenet_{side}", folder, args.iterations)
            competitor = Competitor(situation, side, folder) if situation != "quiet" else None
            try:
                wall, peak, text = run(command(side, ["train", "-solver", str(solver)]),
                                       folder, folder / f"lenet_{side}.log")
            finally:
                if competitor is not None:
                    competitor.stop()
            return wall, peak, solving_seconds(text)
        rows[situation] = abba(sides, args.repeat, measure)
    return rows


def solving_seconds(text):
    """From the log's "Solving" line to its last "Optimization Done" (glog timestamps): the
    run without process start-up (pycaffe's is mostly `import torch`, about 1.5 s here)."""
    stamp = r"^[IWEF]\d{4,8} (\d\d):(\d\d):(\d\d\.\d+) .*"
    start = re.search(stamp + r"\] Solving ", text, re.M)
    ends = re.findall(stamp + r"\] Optimization Done", text, re.M)
    if not start or not ends:
        return float("nan")
    secs = [int(h) * 3600 + int(m) * 60 + float(x) for h, m, x in (start.groups(), ends[-1])]
    return (secs[1] - secs[0]) % 86400


def time_ms(text, what):
    found = re.findall(rf"Average {what}: ([0-9.]+) ms", text)
    if not found:
        raise RuntimeError(f"no 'Average {what}' line in:\n{text[-2000:]}")
    return float(found[-1])


def data_net(folder):
    lmdb, mean = datasets.jpeg_lmdb(str(folder))
    path = folder / "data_net.prototxt"
    path.write_text(f"""name: "data"
layer {{ name: "data" type: "Data" top: "data" top: "label"
  transform_param {{ crop_size: 227 mirror: true mean_file: "{mean}" }}
  data_param {{ source: "{lmdb}" backend: LMDB batch_size: 128 }} }}
""")
    return path


def time_rows(sides, folder, args, nets):
    """{(name, situation): {side: [ms]}} for `caffe time` on each net."""
    rows = {}
    for name, (model, iterations, what) in nets.items():
        for situation in ("quiet", "busy"):
            def measure(side):
                competitor = Competitor("busy") if situation == "busy" else None
                try:
                    _, peak, text = run(command(side, ["time", "-model", str(model),
                                                       "-iterations", str(iterations)]),
                                        folder, folder / f"time_{side}.log")
                finally:
                    if competitor is not None:
                        competitor.stop()
                return time_ms(text, what), peak
            rows[name, situation] = abba(sides, args.time_repeat, measure)
    return rows


SITUATION = {"quiet": "quiet", "busy": "beside a plain busy process",
             "train": "beside a second training of the same framework"}


def print_lenet(rows, sides):
    print(f"\nLeNet `caffe train` ({ARGS.iterations} iterations; Caffe's examples/mnist files), "
          f"wall s / peak MB, median of {ARGS.repeat}; 'solving s': from the log's Solving line "
          f"to Optimization Done, without process start-up")
    head = "| situation | pycaffe s | pycaffe / its quiet |"
    if "bvlc" in sides:
        head += (" BVLC s | BVLC / its quiet | pycaffe / BVLC | pycaffe solving s |"
                 " BVLC solving s | pycaffe / BVLC solving | peak MB pycaffe | peak MB BVLC |")
    else:
        head += " pycaffe solving s | peak MB pycaffe |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    quiet = {s: median([r[0] for r in rows["quiet"][s]]) for s in sides}
    for situation, result in rows.items():
        ours, peak, solving = (median([r[k] for r in result["pycaffe"]]) for k in range(3))
        line = f"| {SITUATION[situation]} | {ours:.2f} | {ours / quiet['pycaffe']:.2f}x |"
        if "bvlc" in sides:
            ref, ref_peak, ref_solving = (median([r[k] for r in result["bvlc"]])
                                          for k in range(3))
            line += (f" {ref:.2f} | {ref / quiet['bvlc']:.2f}x | {ours / ref:.2f}x |"
                     f" {solving:.2f} | {ref_solving:.2f} | {solving / ref_solving:.2f}x |"
                     f" {peak:.0f} | {ref_peak:.0f} |")
        else:
            line += f" {solving:.2f} | {peak:.0f} |"
        print(line)


def print_time(rows, sides, title, unit):
    print(f"\n{title}, median of {ARGS.time_repeat}")
    head = f"| net | situation | pycaffe {unit} |"
    if "bvlc" in sides:
        head += f" BVLC {unit} | pycaffe speed / BVLC speed | peak MB pycaffe | peak MB BVLC |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (name, situation), result in rows.items():
        convert = UNITS[unit]
        ours = median([convert(name, v) for v, _ in result["pycaffe"]])
        line = f"| {name} | {SITUATION[situation]} | {ours:.1f} |"
        if "bvlc" in sides:
            ref = median([convert(name, v) for v, _ in result["bvlc"]])
            speed = ours / ref if unit == "images/s" else ref / ours
            line += (f" {ref:.1f} | {speed:.2f}x | {median([p for _, p in result['pycaffe']]):.0f}"
                     f" | {median([p for _, p in result['bvlc']]):.0f} |")
        print(line)


UNITS = {"ms": lambda name, ms: ms, "images/s": lambda name, ms: 128 * 1000.0 / ms}


def main(argv=None):
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", default="lenet,data,time")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side and situation (lenet)")
    ap.add_argument("--time-repeat", type=int, default=2, help="runs per side (caffe time rows)")
    ap.add_argument("--iterations", type=int, default=100, help="LeNet training iterations")
    ap.add_argument("--time-iterations", type=int, default=3, help="`caffe time` iterations")
    ap.add_argument("--data-iterations", type=int, default=40)
    ap.add_argument("--keep", help="work in this folder and keep it (default: a temporary one)")
    ARGS = args = ap.parse_args(argv)
    sides = ["pycaffe", "bvlc"]
    if not BVLC_CAFFE.exists():
        print(f"note: BVLC Caffe is not built at {BVLC} (../shared/reference/bvlc_build.sh): "
              f"its columns are skipped")
        sides = ["pycaffe"]
    rows = set(args.rows.split(","))
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_bvlc_"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start; "
          f"{sys.executable}")
    try:
        if "lenet" in rows:
            if not (BVLC / "src" / "examples" / "mnist").exists():
                print("note: Caffe's examples/mnist files are read from /opt/bvlc/src: skipped")
            else:
                print_lenet(lenet_rows(sides, folder, args), sides)
        if "data" in rows:
            nets = {"Data layer, JPEG LMDB, batch 128": (data_net(folder), args.data_iterations,
                                                         "Forward pass")}
            print_time(time_rows(sides, folder, args, nets), sides,
                       "Data layer (`caffe time`, crop 227 + mirror + mean file)", "images/s")
        if "time" in rows:
            nets = {name: (MODELS / f, args.time_iterations, "Forward-Backward")
                    for name, f in TIME_NETS.items()}
            print_time(time_rows(sides, folder, args, nets), sides,
                       f"`caffe time` ({args.time_iterations} iterations, deploy batch)", "ms")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
