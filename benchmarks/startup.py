"""Start-up cost: `import caffe`, the full API, and `caffe --help`, against torch alone.

    python benchmarks/startup.py [--repeat 5] [--before OTHER_SOURCE_TREE]

Each case runs in a fresh interpreter, `repeat` times; the table shows the fastest wall time,
its peak RSS and the cumulative `-X importtime` of the `caffe` package (or torch for the torch
row). With --before, the same cases run from another source tree (e.g. an older checkout) in
the same session, interleaved, and a ratio column compares the two.
"""
import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("torch alone", ["-c", "import torch"]),
    ("import caffe", ["-c", "import caffe"]),
    ("import caffe; caffe.Net", ["-c", "import caffe; caffe.Net"]),
    ("caffe --help", ["-c", "import sys; from caffe.tools.caffe import main; "
                      "sys.argv[1:] = ['--help']; main()"]),
]


def once(tree, args):
    env = dict(os.environ, PYTHONPATH=str(tree))
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-X", "importtime", *args], env=env,
                            capture_output=True, text=True, cwd="/")
    wall = time.perf_counter() - start
    # the whole import cost: the top-level entries' cumulative times
    top = re.findall(r"import time:\s+\d+ \|\s+(\d+) \| (\S[^\n]*)\n", result.stderr)
    imported = sum(int(us) for us, _ in top) / 1e6
    modules = len(re.findall(r"^import time:", result.stderr, re.M)) - 1
    return wall, imported, modules


def peak_rss(tree, args):
    code = ("import resource, sys\n"
            "try:\n    exec(sys.argv[1])\nexcept SystemExit:\n    pass\n"
            "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)")
    env = dict(os.environ, PYTHONPATH=str(tree))
    err = subprocess.run([sys.executable, "-c", code, args[1]], env=env, capture_output=True,
                         text=True, cwd="/").stderr
    found = re.findall(r"^RSS (\d+)$", err, re.M)
    return int(found[-1]) / 1024 if found else float("nan")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--before", help="another source tree to compare with")
    args = parser.parse_args(argv)
    trees = [("after", ROOT)] + ([("before", Path(args.before))] if args.before else [])
    rows = {}
    for _ in range(args.repeat):
        for label, tree in trees:
            for name, case_args in CASES:
                result = once(tree, case_args)
                best = rows.get((label, name))
                if best is None or result[0] < best[0]:
                    rows[(label, name)] = result
    print("| case | tree | wall s (best) | -X importtime total s | modules imported | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for name, case_args in CASES:
        for label, tree in trees:
            wall, imported, modules = rows[(label, name)]
            rss = peak_rss(tree, case_args)
            print(f"| {name} | {label} | {wall:.2f} | {imported:.2f} | {modules} | {rss:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
