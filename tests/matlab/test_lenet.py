"""LeNet trained from Octave (caffe.Solver ... solve) reaches what `caffe train` reaches on the
same solver and data: the same test accuracy, and the same weights."""
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from .nets import lenet_hdf5
from .octave import ok, run_octave

ITERS = 120
TEST_ITER = 4                # x 90 = the 360 held-out digits


def _digits(folder):
    """scikit-learn's 8x8 digits at 28 x 28 in [0, 1) (as the MNIST example scales them),
    1,437 to train and 360 to test, in two HDF5 files and their list files."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    index = (np.arange(28) * 8) // 28
    images = (digits.images[:, index][:, :, index] / 16.0 * 255 / 256).astype(np.float32)
    images = images[:, None]
    labels = digits.target.astype(np.float32)
    order = np.random.default_rng(0).permutation(len(labels))
    parts = {"train": order[:-360], "test": order[-360:]}
    lists = {}
    for name, rows in parts.items():
        with h5py.File(folder / f"{name}.h5", "w") as f:
            f["data"], f["label"] = images[rows], labels[rows]
        lists[name] = folder / f"{name}.txt"
        lists[name].write_text(f"{folder / f'{name}.h5'}\n")
    return lists


def _solver(folder, net, prefix):
    path = folder / f"{prefix}_solver.prototxt"
    path.write_text(f'net: "{net}"\ntest_iter: {TEST_ITER} test_interval: {ITERS}\n'
                    f'base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005\n'
                    f'lr_policy: "inv" gamma: 0.0001 power: 0.75\ndisplay: 40\n'
                    f'max_iter: {ITERS} random_seed: 1701\n'
                    f'snapshot_prefix: "{folder / prefix}"\n')
    return path


def _final_accuracy(log):
    found = re.findall(r"Test net output #\d+: accuracy = ([0-9.]+)", log)
    assert found, log[-3000:]
    return float(found[-1])


@pytest.mark.slow
def test_lenet_trained_from_octave_matches_caffe_train(matcaffe, tmp_path):
    lists = _digits(tmp_path)
    net = tmp_path / "lenet.prototxt"
    net.write_text(lenet_hdf5(lists["train"], lists["test"], train_batch=64, test_batch=90))
    reference = subprocess.run([sys.executable, "-m", "caffe", "train", "-solver",
                                str(_solver(tmp_path, net, "cli"))], capture_output=True,
                               text=True, cwd=tmp_path, timeout=600,
                               env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert reference.returncode == 0, reference.stderr[-3000:]
    cli_accuracy = _final_accuracy(reference.stderr)

    done = run_octave(matcaffe, f"""
    solver = caffe.Solver('{_solver(tmp_path, net, "octave")}');
    solver.solve();
    test_net = solver.test_nets(1);
    accuracy = 0;
    for n = 1:{TEST_ITER}
      test_net.forward_prefilled();
      accuracy = accuracy + test_net.blobs('accuracy').get_data();
    end
    printf('iter %d accuracy %.6f\\n', solver.iter(), accuracy / {TEST_ITER});
    """, tmp_path, OMP_NUM_THREADS="1")
    out = ok(done)
    octave_accuracy = _final_accuracy(done.stderr)
    assert octave_accuracy == cli_accuracy
    assert cli_accuracy > 0.85          # LeNet learns the digits in these few iterations
    iteration, accuracy = re.search(r"iter (\d+) accuracy ([0-9.]+)", out).groups()
    assert int(iteration) == ITERS and abs(float(accuracy) - cli_accuracy) < 1e-4
    # The same training, step for step: the snapshots are byte for byte the same weights.
    cli = (tmp_path / f"cli_iter_{ITERS}.caffemodel").read_bytes()
    octave = (tmp_path / f"octave_iter_{ITERS}.caffemodel").read_bytes()
    assert cli == octave
