"""Run an attack on pycaffe in a child process under a time limit and an address-space limit.

The child imports torch, caffe and the file libraries first, then lowers its own address-space
limit (RLIMIT_AS) to what it holds at that point plus ATTACK_MEMORY (1 GiB): importing torch
alone maps about 0.6 GiB of address space, so a flat 1 GiB limit would leave the attack almost
nothing, and a limit set before the imports would only measure torch. `timeout` kills it after
`seconds`, so a hang fails the test instead of hanging it.

The attack is Python code calling expect(label, function, *places): the function must raise a
CaffeError whose message names every one of `places`; the child prints one line per call
(OK, MISSING, RAW for any other exception, NOERROR), which attack() returns as {label: line}.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACK_MEMORY = 1 << 30

PRELUDE = '''
import os, resource, sys, traceback
import numpy, torch, h5py, lmdb, plyvel, PIL.Image
import caffe, caffe.io
from caffe.errors import CaffeError

def _address_space():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")

BASELINE = _address_space()
resource.setrlimit(resource.RLIMIT_AS, (BASELINE + {memory}, resource.RLIM_INFINITY))
print("BASELINE", BASELINE, flush=True)

def expect(label, call, *places):
    try:
        call()
    except CaffeError as e:
        missing = [p for p in places if p not in str(e)]
        state = "MISSING %r" % missing if missing else "OK"
        print(state, label, "|", type(e).__name__, "|", str(e).replace("\\n", " "), flush=True)
        return
    except BaseException as e:
        text = "".join(traceback.format_exception_only(type(e), e)).strip()
        print("RAW", label, "|", text.replace("\\n", " "), flush=True)
        return
    print("NOERROR", label, flush=True)
'''


def attack(code, cwd, seconds=120, env=None):
    """Run `code` after PRELUDE in a limited child; {label: result line}, stdout, stderr."""
    script = PRELUDE.format(memory=ATTACK_MEMORY) + textwrap.dedent(code)
    environment = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_ARENA_MAX="2",
                       OMP_NUM_THREADS="1", **(env or {}))
    done = subprocess.run(["timeout", "-k", "5", str(seconds), sys.executable, "-c", script],
                          cwd=cwd, env=environment, capture_output=True, text=True,
                          check=False)
    assert done.returncode not in (124, 137), \
        f"the attack hung (killed after {seconds} s):\n{done.stdout}\n{done.stderr[-3000:]}"
    if os.environ.get("RELIABILITY_SHOW"):      # docs/reliability.md's table comes from here
        print(done.stdout)
    results = {}
    for line in done.stdout.splitlines():
        state, _, rest = line.partition(" ")
        if state in ("OK", "RAW", "NOERROR") or state.startswith("MISSING"):
            label = rest.split(" | ")[0].strip() if state != "MISSING" else \
                rest.split("] ", 1)[-1].split(" | ")[0].strip()
            results[label] = line
    assert done.returncode == 0, f"the attack crashed:\n{done.stdout}\n{done.stderr[-3000:]}"
    return results, done.stdout, done.stderr


def check_all(results, labels):
    """Every label ran and ended in a CaffeError naming its place."""
    assert set(labels) <= set(results), f"missing: {set(labels) - set(results)}"
    bad = [line for label, line in results.items() if not line.startswith("OK ")]
    assert not bad, "\n".join(bad)
