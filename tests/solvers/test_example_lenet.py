"""examples/mnist/train_lenet.py: LeNet on scikit-learn's digits, end to end."""
import importlib.util
from pathlib import Path

import pytest

import caffe
from caffe.formats import read_caffemodel

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "train_lenet.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_lenet", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_runs_and_saves(tmp_path, capsys):
    example = load_example()
    assert example.main(["--iters", "3", "--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Test accuracy: " in out and f"Model saved to {tmp_path}" in out
    model = read_caffemodel(tmp_path / "lenet_iter_3.caffemodel")
    assert [l.name for l in model.layer if len(l.blobs)] == ["conv1", "conv2", "ip1", "ip2"]
    # the snapshot scores with the example's own net definition, as `caffe test` would
    caffe.Net(str(example.NET), str(tmp_path / "lenet_iter_3.caffemodel"), caffe.TEST)


@pytest.mark.slow
def test_example_reaches_90_percent(tmp_path, capsys):
    assert load_example().main(["--quiet", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("Test accuracy: ")[1].split()[0])
    assert accuracy > 0.9, out
