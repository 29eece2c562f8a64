"""`make compat`: pycaffe's wheel in fresh venvs at the oldest and newest of each dependency.

    python .ci/compat.py [--workdir DIR] [--only NAME ...] [--tests] [--download]

Builds the wheel, then for each row of MATRIX makes a venv, installs the row's torch first
(pinned), then the wheel with the row's pins (pip's resolver also checks that our declared
ranges accept them), and runs .ci/compat_smoke.py from outside the checkout. Prints a markdown
table (docs/compat.md keeps the last one). Rows whose Python has no torch wheel here install
the wheel without torch and run the protobuf part of the smoke.

--tests also runs TEST_SUBSET (the layers' and solvers' golden suites, Net, formats, pycaffe;
about 650 tests) with each torch row's venv, from the checkout.

torch rows: the CPU build of 2.13.0 lies on this machine's disk, and so does 2.14.1 (a CUDA
build, with its CUDA libraries: about 5.5 GB in the venv, run on the CPU). Every other torch
release comes only from PyPI, whose Linux wheels are CUDA builds: with their nvidia-* packages
2.5 to 3 GB to download per row. Those rows run only with --download.
"""
import argparse
import glob
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYENV = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"
TORCH = os.environ.get("COMPAT_TORCH", "torch==2.13.0")
OLDEST = ["numpy==1.23.5", "protobuf==4.25.9", "h5py==3.8.0", "Pillow==9.4.0", "lmdb==1.4.1",
          "tqdm==4.60.0"]
NEWEST = ["numpy==2.4.6", "protobuf==7.36.2", "h5py", "Pillow", "lmdb", "tqdm"]
CORE_NO_TORCH = ["numpy", "protobuf", "h5py", "Pillow", "lmdb", "tqdm"]
MATRIX = [
    # name, python, torch (True: TORCH; a pin; False: none), pins
    ("oldest", "3.11", True, OLDEST),
    ("newest", "3.11", True, NEWEST),
    ("protobuf-5.29", "3.11", True, ["protobuf==5.29.6"]),
    ("protobuf-6.33", "3.11", True, ["protobuf==6.33.6"]),
    ("numpy-1.26", "3.11", True, ["numpy==1.26.4"]),
    ("torch-2.14.1", "3.11", "torch==2.14.1", []),
    # PyPI only (--download). torch before 2.3 was built against NumPy 1.
    ("torch-2.9.1", "3.11", "torch==2.9.1", []),
    ("torch-2.4.1", "3.11", "torch==2.4.1", ["numpy<2"]),
    ("torch-2.1.2", "3.11", "torch==2.1.2", ["numpy<2"]),
    ("python-3.10", "3.10", False, ["protobuf==4.25.9", "numpy==1.23.5"]),
    ("python-3.12", "3.12", False, CORE_NO_TORCH),
    ("python-3.13", "3.13", False, CORE_NO_TORCH + ["protobuf==7.36.2"]),
]
# The torch releases pip finds on this machine's disk; others are multi-GB downloads.
ON_DISK = {"torch==2.13.0", "torch==2.14.1"}
TEST_SUBSET = ["tests/layers/test_golden.py", "tests/layers/test_neuron.py",
               "tests/layers/test_vision.py", "tests/layers/test_loss.py",
               "tests/layers/test_common.py", "tests/solvers/test_golden_solvers.py",
               "tests/solvers/test_solver.py", "tests/solvers/test_lr_policy.py",
               "tests/test_blob.py", "tests/test_filler.py", "tests/test_net.py",
               "tests/test_formats.py", "tests/test_pycaffe.py", "tests/test_io.py",
               "tests/test_net_spec.py", "tests/proto", "tests/upgrade"]
REPORTED = ["python", "torch", "numpy", "protobuf", "h5py", "Pillow", "lmdb", "tqdm"]


def interpreter(version):
    found = sorted(glob.glob(str(PYENV / f"{version}.*" / "bin" / "python")))
    if found:
        return found[-1]
    if sys.version.startswith(version + "."):
        return sys.executable
    return None


def run(cmd, **kwargs):
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


def build_wheel(workdir):
    out = workdir / "dist"
    for old in out.glob("*.whl"):
        old.unlink()
    result = run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)])
    if result.returncode:
        sys.exit("building the wheel failed:\n" + result.stderr[-2000:])
    return next(out.glob("pycaffe-*.whl"))


def versions(python):
    code = ("import importlib.metadata as m, platform\n"
            f"names = {REPORTED[1:]!r}\n"
            "out = [platform.python_version()]\n"
            "for n in names:\n"
            "    try: out.append(m.version(n))\n"
            "    except m.PackageNotFoundError: out.append('-')\n"
            "print('|'.join(out))")
    return run([python, "-c", code]).stdout.strip().split("|")


def test_subset(python):
    """TEST_SUBSET run from the checkout with this venv's packages: 'N passed, ...'."""
    # plyvel: tests/proto's parse-limit attacks read LevelDB too.
    result = run([python, "-m", "pip", "install", "-q", "pytest>=7", "hypothesis>=6", "plyvel"])
    if result.returncode:
        return "tests: pytest could not be installed"
    result = run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + TEST_SUBSET,
                 cwd=str(ROOT), env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    return "tests: " + (lines[-1].strip("= ") if lines else f"exit {result.returncode}")


def one_row(name, version, with_torch, pins, wheel, workdir, tests=False, download=False):
    torch_pin = TORCH if with_torch is True else with_torch
    if torch_pin and torch_pin not in ON_DISK and not download:
        return [name] + ["-"] * len(REPORTED) + [
            f"skipped: {torch_pin} is a multi-GB CUDA download from PyPI (--download)"]
    base = interpreter(version)
    if base is None:
        return [name] + ["-"] * len(REPORTED) + [f"skipped: no Python {version}"]
    venv = workdir / name
    if not (venv / "bin" / "python").exists():
        if run([base, "-m", "venv", str(venv)]).returncode:
            return [name] + ["-"] * len(REPORTED) + ["venv failed"]
    python = str(venv / "bin" / "python")
    steps = []
    if torch_pin:
        steps.append([python, "-m", "pip", "install", "-q", torch_pin])
        # The pin again: pip would otherwise upgrade the row's torch to what we declare.
        steps.append([python, "-m", "pip", "install", "-q", str(wheel), torch_pin] + pins)
    else:
        steps.append([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                      str(wheel)])
        steps.append([python, "-m", "pip", "install", "-q"] + pins)
    for step in steps:
        result = run(step)
        if result.returncode:
            tail = [line for line in result.stderr.splitlines() if "WARNING: Location" not in line]
            return [name] + versions(python) + ["install failed: " + " ".join(tail[-2:])[:200]]
    result = run([python, str(ROOT / ".ci" / "compat_smoke.py")], cwd=str(workdir),
                 env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    outcome = result.stdout.strip().splitlines()[-1] if result.returncode == 0 else \
        "FAIL: " + (result.stderr.strip().splitlines() or ["?"])[-1][:200]
    if tests and torch_pin and result.returncode == 0:
        outcome += "; " + test_subset(python)
        if " failed" in outcome or " error" in outcome:
            outcome = "FAIL: " + outcome
    return [name] + versions(python) + [outcome]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default=os.environ.get("COMPAT_DIR", "/tmp/pycaffe-compat"))
    parser.add_argument("--only", nargs="*", help="row names to run")
    parser.add_argument("--tests", action="store_true",
                        help="also run TEST_SUBSET in each torch row's venv")
    parser.add_argument("--download", action="store_true",
                        help="run the rows whose torch is a multi-GB download from PyPI")
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    wheel = build_wheel(workdir)
    header = ["row"] + REPORTED + ["result"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    print("\n".join(lines), flush=True)
    failed = False
    for name, version, with_torch, pins in MATRIX:
        if args.only and name not in args.only:
            continue
        start = time.time()
        row = one_row(name, version, with_torch, pins, wheel, workdir, args.tests, args.download)
        failed |= row[-1].startswith(("FAIL", "install failed"))
        line = "| " + " | ".join(row) + " |"
        lines.append(line)
        print(line, f"<!-- {time.time() - start:.0f} s -->", flush=True)
    (workdir / "compat.md").write_text("\n".join(lines) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
