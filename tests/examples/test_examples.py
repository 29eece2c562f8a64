"""Every example under examples/ runs end to end on small or generated data (short runs)."""
import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import caffe
from caffe.formats import read_caffemodel

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run(path, argv, capsys):
    """Import examples/<path> as a module, run main(argv); returns what it printed."""
    name = "example_" + path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(argv) in (0, None)
    return capsys.readouterr().out, module


def number(pattern, text):
    return float(re.search(pattern, text).group(1))


def test_mnist_lenet_solver_variants(tmp_path, capsys):
    for solver in ("adam", "nesterov"):
        out, module = run("mnist/train_lenet.py", ["--iters", "2", "--quiet", "--solver", solver,
                                                   "--out", str(tmp_path / solver)], capsys)
        assert f"{solver}\n" in out and "Test accuracy: " in out
        state = caffe.proto.caffe_pb2.SolverState()
        state.ParseFromString((tmp_path / solver / "lenet_iter_2.solverstate").read_bytes())
        assert state.iter == 2
    assert module.SOLVERS["adam"].split()[1] == '"Adam"'


def test_mnist_autoencoder(tmp_path, capsys):
    out, _ = run("mnist/autoencoder.py", ["--iters", "3", "--batch", "8", "--limit", "16",
                                          "--out", str(tmp_path)], capsys)
    before, after = (number(p, out) for p in (r"loss: ([\d.]+) before", r"before, ([\d.]+)"))
    assert after < before                      # three Nesterov steps already reconstruct better
    net = caffe.Net(str(tmp_path / "autoencoder.prototxt"), caffe.TRAIN)
    assert net.blobs["encode4"].data.shape == (8, 30)
    assert Image.open(tmp_path / "reconstructions.png").size[0] >= 512


def test_mnist_siamese(tmp_path, capsys):
    out, module = run("mnist/siamese.py", ["--iters", "2", "--limit", "64",
                                           "--out", str(tmp_path)], capsys)
    assert 0 <= number(r"embedding: ([\d.]+)", out) <= 1
    assert Image.open(tmp_path / "siamese_embedding.png").size[0] > 300
    net = caffe.Net(str(tmp_path / "mnist_siamese_train_test.prototxt"), caffe.TRAIN)
    # The towers share every weight: one learnable blob per shared name.
    assert net.params["conv1"][0].data is not None and "conv1_p" in net.params
    net.params["conv1"][0].data[...] = 0.5
    assert np.all(net.params["conv1_p"][0].data == 0.5)
    partners, sim = module.make_pairs(np.arange(20)[:, None], np.arange(20) % 2)
    assert np.all(sim == ((partners[:, 0] % 2) == (np.arange(20) % 2)))


def test_cifar10_quick_and_full(tmp_path, capsys):
    run("cifar10/create_cifar10.py", ["--synthetic", "40", "--out", str(tmp_path)], capsys)
    for net in ("quick", "full"):
        out, _ = run("cifar10/train_cifar10.py",
                     ["--net", net, "--iters", "2", "--batch", "4", "--test_iter", "2",
                      "--data", str(tmp_path), "--out", str(tmp_path)], capsys)
        assert f"caffe test -model {tmp_path}/cifar10_{net}_train_test.prototxt" in out
        last = 3 if net == "quick" else 2               # quick resumes for a second stage
        model = read_caffemodel(tmp_path / f"cifar10_{net}_iter_{last}.caffemodel")
        assert [l.name for l in model.layer if l.blobs][-1] == ("ip2" if net == "quick"
                                                                else "ip1")


def test_hdf5_logistic_regression(tmp_path, capsys):
    out, _ = run("hdf5_classification/logreg.py", ["--iters", "30", "--samples", "400",
                                                   "--out", str(tmp_path)], capsys)
    for name in ("scikit-learn logistic regression", "Caffe logreg", "Caffe nonlinear"):
        assert 0 <= number(name + r".*accuracy ([\d.]+)", out) <= 1
    assert (tmp_path / "train.txt").read_text().split() == [str(tmp_path / "train_0.h5")]


def test_finetune_style(tmp_path, capsys):
    out, _ = run("finetune_flickr_style/finetune.py",
                 ["--pretrain_iters", "2", "--iters", "2", "--images", "50", "--test_images", "50",
                  "--out", str(tmp_path)], capsys)
    assert "from pretrained" in out and "from scratch" in out
    # copy_from took every pretrained layer but the renamed classifier.
    pretrained = read_caffemodel(tmp_path / "pretrained_iter_2.caffemodel")
    assert "fc8" in [l.name for l in pretrained.layer if l.blobs]
    assert "fc8_flickr" in (tmp_path / "finetune_style_train.prototxt").read_text()


def test_fcn_segmentation(tmp_path, capsys):
    out, _ = run("fcn/fcn.py", ["--iters", "2", "--train", "10", "--test", "10",
                                "--out", str(tmp_path)], capsys)
    # The fixed upsampling kernel is FCN's bilinear one: (1 - |x - c| / f) for kernel 8.
    row = [float(v) for v in re.search(r"kernel row \[([^\]]+)\]", out).group(1).split(",")]
    f, c = 4, 3.5 / 4
    expected = [(1 - abs(x / f - c)) * (1 - abs(3 / f - c)) for x in range(8)]
    np.testing.assert_allclose(row, expected, atol=1e-3)
    assert "score cropped to (10, 3, 64, 64)" in out
    assert 0 <= number(r"mean IoU ([\d.]+)", out) <= 1
    assert Image.open(tmp_path / "segmentation.png").size[0] >= 512


def test_fcn_iou():
    sys.path.insert(0, str(EXAMPLES / "fcn"))
    try:
        from fcn import iou
    finally:
        sys.path.remove(str(EXAMPLES / "fcn"))
    labels = np.array([0, 0, 1, 1, 2, 2])
    np.testing.assert_allclose(iou(np.array([0, 1, 1, 1, 2, 0]), labels), [1 / 3, 2 / 3, 1 / 2])


def test_lstm_sequence(tmp_path, capsys):
    out, _ = run("lstm_sequence/lstm_sequence.py", ["--iters", "3", "--steps", "12",
                                                    "--batch", "3", "--out", str(tmp_path)],
                 capsys)
    assert number(r"LSTM ([\d.]+)", out) >= 0 and number(r"last value ([\d.]+)", out) > 0


def test_lrcn_captioner(tmp_path, capsys):
    out, module = run("lrcn_captioner/captioner.py", ["--iters", "3", "--batch", "4",
                                                      "--test", "4", "--out", str(tmp_path)],
                      capsys)
    assert "Greedy decoding, 4 new scenes" in out and out.count("decoded:") == 4
    inputs, cont, targets = module.sentences([["a", "red", "disc"]])
    assert inputs[:4, 0].tolist() == [0, 1, module.WORD["red"], module.WORD["disc"]]
    assert targets[:5, 0].tolist() == [1, module.WORD["red"], module.WORD["disc"], 0, -1]
    assert cont[:, 0].tolist() == [0] + [1] * (module.STEPS - 1)


def test_rcnn_detection(tmp_path, capsys):
    out, module = run("rcnn_detection/detect.py", ["--iters", "2", "--train", "4", "--test",
                                                   "1", "--threshold", "0.0",
                                                   "--out", str(tmp_path)], capsys)
    assert 0 <= number(r"precision ([\d.]+)", out) <= 1
    assert 0 <= number(r"recall ([\d.]+)", out) <= 1
    assert module.nms([(0.9, (0, 0, 10, 10)), (0.8, (1, 1, 11, 11)),
                       (0.7, (20, 20, 30, 30))]) == [(0.9, (0, 0, 10, 10)),
                                                    (0.7, (20, 20, 30, 30))]


def test_feature_extraction_tsne(tmp_path, capsys):
    pytest.importorskip("sklearn.manifold", reason="t-SNE needs scikit-learn "
                        "(pip install 'pycaffe[examples]')")
    out, _ = run("feature_extraction/features_tsne.py", ["--train_iters", "2", "--images",
                                                         "50", "--out", str(tmp_path)], capsys)
    assert "-> 500-d ip1 features" in out
    assert 0 <= number(r"([\d.]+) on the 2-D t-SNE map", out) <= 1
    assert 0 <= number(r"accuracy: ([\d.]+) on the ip1 features", out) <= 1
    assert Image.open(tmp_path / "tsne.png").size[0] > 300
