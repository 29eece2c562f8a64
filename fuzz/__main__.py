"""Run every fuzz harness for a time budget and report inputs run per reader.

    .venv/bin/python -m fuzz --seconds 60              # all targets, 60 s each
    .venv/bin/python -m fuzz --seconds 600 --jobs 2 net_prototxt datum
    .venv/bin/python -m fuzz --runs 100000 --seconds 3600   # stop each at 10^5 inputs

With atheris installed (pip install atheris) each target runs under libFuzzer, coverage-guided,
in its own process; otherwise hypothesis mutates the seed corpora (fuzz/hypo.py). Inputs
libFuzzer finds interesting go to fuzz/.work/<target>/corpus (not committed); a failing input
is written to fuzz/.work/<target>/ and named in the report: fix the reader, then copy the
input to fuzz/corpus/<target>/regress-<what> so tests/test_fuzz_corpora.py replays it forever.
Exit status: 0 when no target failed.
"""
import argparse
import os
import re
import subprocess
import sys
import time

from .targets import TARGETS

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")
WORK = os.path.join(HERE, ".work")
# HDF5 files and weights are bigger than the 4 KiB libFuzzer starts from.
MAX_LEN = {"caffemodel": 16384, "caffemodel_h5": 32768, "solverstate": 16384,
           "solverstate_h5": 32768, "hdf5_data": 16384, "image": 8192}


def _have_atheris():
    import importlib.util
    return importlib.util.find_spec("atheris") is not None


def _libfuzzer_command(name, args):
    work = os.path.join(WORK, name)
    os.makedirs(os.path.join(work, "corpus"), exist_ok=True)
    cmd = [sys.executable, "-m", "fuzz.harness", name,
           f"-max_total_time={args.seconds}", f"-timeout={args.timeout}",
           f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={MAX_LEN.get(name, 4096)}",
           f"-artifact_prefix={work}/", "-print_final_stats=1"]
    if args.runs:
        cmd.append(f"-runs={args.runs}")
    return cmd + [os.path.join(work, "corpus"), os.path.join(CORPUS, name)]


def _parse(output):
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", output) or \
        re.search(r"Done (\d+) runs", output)
    artifact = re.search(r"Test unit written to (\S+)", output)
    return int(runs.group(1)) if runs else None, artifact.group(1) if artifact else None


def _run_libfuzzer(names, args):
    """Run the harnesses, `args.jobs` at a time; returns {name: (runs, seconds, failure)}."""
    pending, running, results = list(names), {}, {}
    root = os.path.dirname(HERE)
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.setdefault("OMP_NUM_THREADS", "1")
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            log = open(os.path.join(WORK, f"{name}.log"), "w+")
            target_env = dict(env, FUZZ_ADDRESS_SPACE_MB=str(args.address_space_mb))
            if args.collect:
                target_env["FUZZ_COLLECT"] = os.path.join(WORK, name, "collected")
            proc = subprocess.Popen(_libfuzzer_command(name, args), cwd=os.path.join(WORK, name),
                                    stdout=log, stderr=subprocess.STDOUT, env=target_env)
            running[name] = (proc, log, time.time())
        time.sleep(0.5)
        for name, (proc, log, start) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            log.seek(0)
            output = log.read()
            log.close()
            runs, artifact = _parse(output)
            failure = None
            if proc.returncode != 0:
                failure = artifact or f"exit status {proc.returncode} (see fuzz/.work/{name}.log)"
            index = os.path.join(WORK, name, "collected", "index.txt")
            if args.collect and os.path.exists(index):
                with open(index) as f:
                    kinds = [line.split()[0] for line in f if line.strip()]
                failure = f"{len(kinds)} distinct failure(s): {', '.join(kinds)}"
            results[name] = (runs, time.time() - start, failure)
            _report_line(name, *results[name])
    return results


def _report_line(name, runs, seconds, failure):
    rate = f"{runs / seconds:8.0f}/s" if runs and seconds else " " * 10
    status = "ok" if failure is None else f"FAILED: {failure}"
    print(f"{name:16s} {runs if runs is not None else '?':>9} inputs {rate}  {status}",
          flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help=f"targets (default all): {', '.join(TARGETS)}")
    parser.add_argument("--seconds", type=int, default=60, help="time budget per target")
    parser.add_argument("--runs", type=int, default=0, help="stop a target after this many "
                        "inputs (0: run for --seconds)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 1)),
                        help="targets fuzzed at once (default: one per core)")
    parser.add_argument("--timeout", type=int, default=10,
                        help="seconds one input may take before it counts as a hang")
    parser.add_argument("--rss_limit_mb", type=int, default=4096,
                        help="memory (MB) past which the process counts as leaking/bombed")
    parser.add_argument("--address_space_mb", type=int, default=4096,
                        help="cap on each fuzzing process's address space (0: none); "
                        "libhdf5 allocations sized by a hostile file then fail cleanly")
    parser.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    parser.add_argument("--collect", action="store_true",
                        help="atheris: go on after a failure, keeping one input per distinct "
                        "failure in fuzz/.work/<target>/collected (triage)")
    args = parser.parse_args(argv)
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        parser.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if _have_atheris() else "hypothesis"
    os.makedirs(WORK, exist_ok=True)
    print(f"fuzzing {len(names)} target(s) with {engine}, {args.seconds} s each, "
          f"{args.jobs} at a time", flush=True)
    if engine == "atheris":
        results = _run_libfuzzer(names, args)
    else:
        from .hypo import fuzz_target
        results = {}
        for name in names:
            start = time.time()
            runs, failure = fuzz_target(name, args.seconds, args.runs, WORK)
            results[name] = (runs, time.time() - start, failure)
            _report_line(name, *results[name])
    total = sum(r[0] or 0 for r in results.values())
    failed = [n for n, r in results.items() if r[2]]
    print(f"total {total} inputs; {len(failed)} target(s) failed{': ' if failed else ''}"
          f"{', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
