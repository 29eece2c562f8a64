"""Sequence learning with an LSTM layer: predicting the next value of a signal.

    python examples/lstm_sequence/lstm_sequence.py [--iters 1500] [--out lstm_out]

Each sequence is a sum of two sines with random phases, frequencies and amplitudes; the net
reads it one step at a time and predicts the next value. The LSTM layer takes Caffe's
T x N x ... time-major layout and the `cont` markers (0 at a sequence's first step, 1 after)
that tell it where sequences start; an InnerProduct over axis 2 maps each step's hidden
state to the prediction, scored by EuclideanLoss. The test error is printed beside the
error of repeating the last value, the trivial predictor the LSTM has to beat.
"""
import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import caffe  # noqa: E402
from caffe import layers as L  # noqa: E402
from training import make_solver  # noqa: E402

SOLVER = ('type: "Adam" base_lr: 0.01 momentum: 0.9 momentum2: 0.999 lr_policy: "fixed" '
          'clip_gradients: 1 display: 100 random_seed: 1701')


def signals(n, steps, seed=0):
    """n sequences of steps + 1 values, T x N (time major)."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps + 1)[:, None]
    out = np.zeros((steps + 1, n))
    for _ in range(2):
        out += rng.uniform(0.3, 1, n) * np.sin(rng.uniform(0.05, 0.3, n) * t +
                                               rng.uniform(0, 2 * np.pi, n))
    return out.astype(np.float32)


def lstm_net(steps, batch, hidden=32):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[steps, batch, 1]))
    n.cont = L.Input(shape=dict(dim=[steps, batch]))
    n.target = L.Input(shape=dict(dim=[steps, batch, 1]))
    n.lstm = L.LSTM(n.data, n.cont, recurrent_param=dict(
        num_output=hidden, weight_filler=dict(type="uniform", min=-0.08, max=0.08),
        bias_filler=dict(type="constant")))
    n.predict = L.InnerProduct(n.lstm, num_output=1, axis=2,
                               weight_filler=dict(type="gaussian", std=0.1))
    n.loss = L.EuclideanLoss(n.predict, n.target)
    return n.to_proto()


def feed(net, seq):
    net.blobs["data"].data[...] = seq[:-1, :, None]
    net.blobs["target"].data[...] = seq[1:, :, None]
    net.blobs["cont"].data[...] = 1
    net.blobs["cont"].data[0] = 0                     # every sequence starts at step 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=1500)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="lstm_out")
    args = p.parse_args(argv)
    caffe.set_random_seed(1701)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    net = lstm_net(args.steps, args.batch)
    (out / "lstm_sequence.prototxt").write_text(str(net))
    solver = make_solver(net, SOLVER, args.iters)
    counter = {"i": 0}

    def new_batch():
        counter["i"] += 1
        feed(solver.net, signals(args.batch, args.steps, seed=1000 + counter["i"]))
    solver.add_callback(new_batch, None)
    solver.solve()
    test = caffe.Net(net, caffe.TEST)
    test.share_with(solver.net)
    seq = signals(args.batch, args.steps, seed=7)
    feed(test, seq)
    test.forward()
    predicted = test.blobs["predict"].data[:, :, 0]
    # Past the first few steps: the LSTM needs a little history to know a sequence.
    mse = float(np.mean((predicted[5:] - seq[6:]) ** 2))
    repeat = float(np.mean((seq[5:-1] - seq[6:]) ** 2))
    print(f"Test mean squared error of the next value: LSTM {mse:.5f}, repeating the last "
          f"value {repeat:.5f} ({args.iters} iterations, {args.steps} steps x "
          f"{args.batch} sequences)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
