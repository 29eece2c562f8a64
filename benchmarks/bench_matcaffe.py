"""matcaffe's gateway speed: what a call from Octave costs over pycaffe called from Python.

    .venv/bin/python -m benchmarks.bench_matcaffe            # ~1 minute on 2 busy cores
    .venv/bin/python -m benchmarks.bench_matcaffe --repeat 200 --spinning

Rows (median per call, in microseconds or milliseconds):
  - round trip: caffe_('get_init_key'), the gateway's smallest command, against the bridge's
    dispatch of it called from Python (what the gateway adds: MEX call, GIL, conversions);
  - a 200 KB blob (1 x 50 x 32 x 32 single): caffe_('blob_set_data'/'blob_get_data') and
    matcaffe's Blob.set_data / get_data (which also check the size), against pycaffe's
    `blob.data[...] = x` and `blob.data.copy()`;
  - LeNet forward, batch 64: net.forward({x}) from Octave (set, forward, get) and
    forward_prefilled alone, against pycaffe's net.forward(data=x) and net.forward().
Octave is started as `python -m caffe.matlab octave` starts it (OMP_WAIT_POLICY=PASSIVE);
--spinning adds the same Octave rows without that setting, to show what it is for.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BIG = 'name: "big" layer { name: "x" type: "Input" top: "x" ' \
      'input_param { shape { dim: 1 dim: 50 dim: 32 dim: 32 } } }\n'

OCTAVE = r"""
n = {repeat};
t = zeros(1, n);
function t = per_call(f, n)
  t = zeros(1, n);
  for k = 1:n
    tic; f(); t(k) = toc;
  end
  t = median(t);
end
caffe_('get_init_key');
big = caffe.Net('big.prototxt', 'test');
blob = big.blobs('x');
attr = caffe_('net_get_attr', caffe_('get_net', 'big.prototxt', 'test'));
h = attr.hBlob_blobs(1);            % a raw handle, for the bare command's row
x = rand(32, 32, 50, 1, 'single');
lenet = caffe.Net('lenet.prototxt', 'test');
digits = rand(28, 28, 1, 64, 'single');
lenet.forward({{digits}});
blob.set_data(x);
printf('round_trip %.9f\n', per_call(@() caffe_('get_init_key'), n));
printf('set_raw %.9f\n', per_call(@() caffe_('blob_set_data', h, x), n));
printf('set_data %.9f\n', per_call(@() blob.set_data(x), n));
printf('get_data %.9f\n', per_call(@() blob.get_data(), n));
printf('forward %.9f\n', per_call(@() lenet.forward({{digits}}), max(20, round(n / 2))));
printf('forward_prefilled %.9f\n', per_call(@() lenet.forward_prefilled(), max(20, round(n / 2))));
"""


def _median_time(f, n):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def python_rows(folder, repeat):
    import caffe
    from caffe.matlab import bridge
    big = caffe.Net(str(folder / "big.prototxt"), caffe.TEST)
    lenet = caffe.Net(str(folder / "lenet.prototxt"), caffe.TEST)
    x = np.random.rand(1, 50, 32, 32).astype(np.float32)
    digits = np.random.rand(64, 1, 28, 28).astype(np.float32)
    blob = big.blobs["x"]
    lenet.forward(data=digits)

    def set_data():
        blob.data[...] = x
    return {"round_trip": _median_time(lambda: bridge.dispatch("get_init_key", ()), repeat),
            "set_data": _median_time(set_data, repeat),
            "get_data": _median_time(lambda: blob.data.copy(), repeat),
            "forward": _median_time(lambda: lenet.forward(data=digits), max(20, repeat // 2)),
            "forward_prefilled": _median_time(lenet.forward, max(20, repeat // 2))}


def octave_rows(matcaffe, folder, repeat, passive=True):
    from caffe.matlab.__main__ import host_environment
    env = host_environment(matcaffe, {k: v for k, v in os.environ.items()
                                      if k not in ("OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                                                   "CAFFE_THREADS_CHOSEN")})
    env["GLOG_minloglevel"] = "1"
    if not passive:
        env.pop("OMP_WAIT_POLICY")
        env.pop("KMP_BLOCKTIME", None)
    script = folder / "bench.m"
    script.write_text("1;\n" + OCTAVE.format(repeat=repeat))
    done = subprocess.run(["octave-cli", "--no-gui", "--norc", "-q", str(script)], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=1200)
    if done.returncode != 0:
        sys.exit(f"octave failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return {k: float(v) for k, v in (line.split() for line in done.stdout.splitlines()
                                     if len(line.split()) == 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="calls timed per row")
    parser.add_argument("--spinning", action="store_true",
                        help="also time Octave started without OMP_WAIT_POLICY=PASSIVE")
    parser.add_argument("--matcaffe", help="a folder built by python -m caffe.matlab build "
                                           "(default: build one in a temporary folder)")
    args = parser.parse_args(argv)
    from caffe.matlab import build
    from tests.matlab.nets import lenet_deploy
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        matcaffe = Path(args.matcaffe) if args.matcaffe else build(folder / "matcaffe")
        (folder / "big.prototxt").write_text(BIG)
        (folder / "lenet.prototxt").write_text(lenet_deploy(batch=64))
        columns = {"Octave": octave_rows(matcaffe, folder, args.repeat)}
        if args.spinning:
            columns["Octave, spinning"] = octave_rows(matcaffe, folder, args.repeat, False)
        columns["Python"] = python_rows(folder, args.repeat)
    rows = [("round trip (get_init_key)", "round_trip", 1e6, "us"),
            ("200 KB blob: caffe_ blob_set_data", "set_raw", 1e6, "us"),
            ("200 KB blob: Blob.set_data", "set_data", 1e6, "us"),
            ("200 KB blob: Blob.get_data", "get_data", 1e6, "us"),
            ("LeNet forward b64: net.forward({x})", "forward", 1e3, "ms"),
            ("LeNet forward b64: forward_prefilled", "forward_prefilled", 1e3, "ms")]
    import torch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads here; "
          f"median of {args.repeat} calls")
    print(f"{'':40}" + "".join(f"{name:>20}" for name in columns))
    for label, key, scale, unit in rows:
        cells = [f"{c[key] * scale:.1f} {unit}" if key in c else "-" for c in columns.values()]
        print(f"{label:40}" + "".join(f"{cell:>20}" for cell in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
