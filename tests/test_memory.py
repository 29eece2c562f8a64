"""Long-run health, short version: memory does not grow while a small net trains.

benchmarks/bench_memory.py trains a net reading an LMDB (prefetch thread, wrap-around), with a
test net and snapshots, and samples the resident set size and the live Python objects. Here it
runs 2,000 iterations in a fresh process; the benchmark's default is 10^5. After a warm-up
the growth must stay within a small bound: a leak of one small tensor or one Python object per
iteration would show as a slope well above it.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 2000
# Bounds: allocator noise stays far below these; one leaked 1 KB buffer per iteration is
# 1024 bytes/iteration and one leaked object per iteration a slope of 1.
MAX_RSS_SLOPE = 200           # bytes per iteration
MAX_RSS_GROWTH_MB = 2.0       # after the warm-up
MAX_OBJECT_SLOPE = 0.02       # objects per iteration


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc for RSS")
def test_memory_does_not_grow_while_training():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_memory.py"),
                          "--iterations", str(ITERATIONS), "--every", "50", "--json"],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    summary = {k: v for k, v in result.items() if k != "samples"}
    assert result["rss_slope_bytes_per_iter"] < MAX_RSS_SLOPE, summary
    assert result["rss_steady_growth_mb"] < MAX_RSS_GROWTH_MB, summary
    assert result["objects_slope_per_iter"] < MAX_OBJECT_SLOPE, summary
