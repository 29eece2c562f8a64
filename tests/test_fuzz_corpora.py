"""Replay every fuzz corpus file (seeds and past failures) through its reader.

A reader may refuse an input only with a caffe.errors.CaffeError; anything else (or a hang,
which pytest's own run time would show) is a regression. fuzz/corpus/<target>/regress-* are
the inputs that once failed; fuzz/README.md says how they get there.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from caffe.errors import CaffeError
from fuzz import hypo, targets

ROOT = Path(__file__).resolve().parents[1]

# Failures found by fuzzing outside the readers (in layer setup code this task does not own),
# pending a fix: file name -> the fix needed. They run as strict xfails, so a fix shows up.
KNOWN = {}

CASES = [(name, path) for name in targets.TARGETS for path in hypo.corpus_files(name)]


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    targets.setup(str(tmp_path_factory.mktemp("fuzz")))
    yield
    targets.teardown()


def test_every_target_has_a_corpus():
    assert {name for name, _ in CASES} == set(targets.TARGETS)


@pytest.mark.parametrize("name,path", CASES,
                         ids=[f"{n}/{os.path.basename(p)}" for n, p in CASES])
def test_corpus_file_is_refused_cleanly(fuzz_env, name, path):
    base = os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    if base in KNOWN:
        # Strict: once fixed (a CaffeError or success) this fails, to retire the entry.
        with pytest.raises(Exception) as info:
            targets.TARGETS[name](data)
        if isinstance(info.value, CaffeError):
            pytest.fail(f"{base} is fixed: remove it from KNOWN ({KNOWN[base]})")
        pytest.xfail(KNOWN[base])
    try:
        targets.TARGETS[name](data)
    except CaffeError as e:
        assert str(e), "a refusal must say why"


ATTACKS = [(name, path) for name, path in CASES if os.path.basename(path).startswith("attack-")]


@pytest.mark.parametrize("name,path", ATTACKS,
                         ids=[f"{n}/{os.path.basename(p)}" for n, p in ATTACKS])
def test_attack_file_is_refused(fuzz_env, name, path):
    """fuzz/corpus/<target>/attack-*: the hostile files of issue 20 (bombs, external storage,
    links, bad counts and lines) must be refused, not merely survive."""
    with open(path, "rb") as f:
        data = f.read()
    with pytest.raises(CaffeError):
        targets.TARGETS[name](data)


def test_runner_one_command():
    """`python -m fuzz --seconds N` runs the harnesses and reports inputs run per reader (here
    one target, one second, with the engine that needs no atheris)."""
    out = subprocess.run([sys.executable, "-m", "fuzz", "--seconds", "1", "--engine",
                          "hypothesis", "binaryproto"], check=False, cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 target(s) failed" in out.stdout
    runs = int(out.stdout.split("binaryproto", 1)[1].split()[0])
    assert runs > 10
