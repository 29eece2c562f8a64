"""Running matcaffe in GNU Octave from pytest: the gateway built once per session, scripts run
in a fresh octave-cli each (as a user's session), skipped where Octave is missing (required
under CI: PYCAFFE_REQUIRE_OCTAVE=1, set by .ci/run)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REQUIRE = os.environ.get("PYCAFFE_REQUIRE_OCTAVE") == "1"
OCTAVE = shutil.which("octave-cli") or shutil.which("octave")


def need_octave():
    """Skip (fail under PYCAFFE_REQUIRE_OCTAVE=1) without Octave and mkoctfile."""
    missing = [n for n, p in (("octave-cli", OCTAVE), ("mkoctfile", shutil.which("mkoctfile")))
               if p is None]
    if missing:
        message = (f"{' and '.join(missing)} not found (apt-get install octave liboctave-dev; "
                   f"`make test` does it)")
        if REQUIRE:
            pytest.fail(message + "; PYCAFFE_REQUIRE_OCTAVE=1 makes Octave required")
        pytest.skip(message)


def build_gateway(folder):
    """`python -m caffe.matlab build --out folder`, as a user runs it."""
    done = subprocess.run([sys.executable, "-m", "caffe.matlab", "build", "--out", str(folder)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[0] == str(folder)
    return folder


def host_env(folder, passive=True, **extra):
    """The environment `python -m caffe.matlab octave` starts Octave in (or, with
    passive=False, one without the thread settings)."""
    from caffe.matlab.__main__ import host_environment
    env = host_environment(folder, {k: v for k, v in os.environ.items()
                                    if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME")})
    if not passive:
        env.pop("OMP_WAIT_POLICY", None)
        env.pop("KMP_BLOCKTIME", None)
    env.update(extra)
    # what the caller set is the user's choice, not the launcher's
    chosen = [n for n in env.get("CAFFE_THREADS_CHOSEN", "").split(",") if n and n not in extra]
    env["CAFFE_THREADS_CHOSEN"] = ",".join(chosen)
    return env


def octave_command(script_file):
    return [OCTAVE, "--no-gui", "--no-window-system", "--norc", "-q", str(script_file)]


def run_octave(folder, script, tmp_path, name="script.m", timeout=300, passive=True, **extra):
    """Run `script` (Octave code) with matcaffe on the path; returns the CompletedProcess.
    A script that raises an error exits with status 1 and its message on stderr."""
    path = Path(tmp_path) / name
    path.write_text(script)
    return subprocess.run(octave_command(path), capture_output=True, text=True,
                          timeout=timeout, cwd=tmp_path,
                          env=host_env(folder, passive=passive, **extra))


def ok(done):
    assert done.returncode == 0, f"octave failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout
