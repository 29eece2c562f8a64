"""Whole SSD models (SSD300 VGG16, MobileNet-SSD) with random weights: DetectionOutput rows
equal to OpenCV dnn's (cv2.dnn.readNetFromCaffe), and to the SSD fork's own build when one
is installed (PYCAFFE_SSD_ROOT, default /opt/ssd)."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

import caffe
from tests.detection_nets import canonical_detections as canonical
from tests.detection_nets import mobilenet_ssd, ssd300_vgg

SSD_ROOT = Path(os.environ.get("PYCAFFE_SSD_ROOT", "/opt/ssd"))
FORK_PYTHON = os.environ.get("PYCAFFE_FORK_PYTHON", "/opt/bvlc/venv/bin/python")


def randomize(net, rng):
    """Weights that keep activations of order one and scores spread out (no ties)."""
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * 0.1
            blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].data.shape)
            blobs[2].data[...] = 1
        elif kind == "Scale":
            blobs[0].data[...] = rng.uniform(0.8, 1.2, blobs[0].data.shape)
            blobs[1].data[...] = rng.randn(*blobs[1].data.shape) * 0.1
        elif "mbox" in name:
            fan_in = blobs[0].data[0].size
            blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * (0.5 / np.sqrt(fan_in))
            blobs[1].data[...] = rng.randn(*blobs[1].data.shape) * (1.0 if "conf" in name else 0.1)


def build(tmp_path, text, seed=0):
    proto = tmp_path / "deploy.prototxt"
    proto.write_text(text)
    net = caffe.Net(str(proto), caffe.TEST)
    rng = np.random.RandomState(seed)
    randomize(net, rng)
    weights = tmp_path / "random.caffemodel"
    net.save(str(weights))
    image = rng.uniform(-1, 1, net.blobs["data"].data.shape).astype(np.float32)
    return net, proto, weights, image


def run_opencv(proto, weights, image):
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is the forward oracle")
    if not hasattr(cv2.dnn, "readNetFromCaffe"):
        pytest.skip(f"OpenCV {cv2.__version__} has no Caffe importer (dropped in 5.0)")
    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setInput(image)
    return net.forward()


MODELS = {
    "mobilenet_ssd": lambda width: mobilenet_ssd(width=width),
    "ssd300_vgg": lambda width: ssd300_vgg(width=width),
}
QUICK = {"mobilenet_ssd": 4, "ssd300_vgg": 8}    # channel divisor for the quick runs


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_ssd_model_matches_opencv(tmp_path, model, full):
    net, proto, weights, image = build(tmp_path, MODELS[model](1 if full else QUICK[model]))
    ours = net.forward(data=image)["detection_out"]
    assert ours.shape[-1] == 7 and ours.shape[2] > 10          # the test has detections
    theirs = run_opencv(proto, weights, image)
    assert ours.shape == theirs.shape
    assert np.abs(canonical(ours) - canonical(theirs)).max() <= 1e-4 * max(
        1.0, np.abs(theirs).max())


def test_ssd_model_matches_the_fork(tmp_path):
    """The fork's own caffe on the same files, when a build is installed."""
    if not (SSD_ROOT / "src" / "python" / "caffe" / "_caffe.so").exists():
        pytest.skip(f"no SSD fork build at {SSD_ROOT} (PYCAFFE_SSD_ROOT)")
    net, proto, weights, image = build(tmp_path, mobilenet_ssd(width=4))
    ours = net.forward(data=image)["detection_out"]
    np.save(tmp_path / "image.npy", image)
    script = ("import sys, numpy as np, caffe\n"
              "net = caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)\n"
              "net.blobs['data'].data[...] = np.load(sys.argv[3])\n"
              "np.save(sys.argv[4], net.forward()['detection_out'])\n")
    env = dict(os.environ, PYTHONPATH=str(SSD_ROOT / "src" / "python"), GLOG_minloglevel="2")
    subprocess.run([FORK_PYTHON, "-c", script, str(proto), str(weights),
                    str(tmp_path / "image.npy"), str(tmp_path / "fork.npy")],
                   env=env, check=True, cwd=tmp_path)
    fork = np.load(tmp_path / "fork.npy")
    assert ours.shape == fork.shape
    assert np.abs(ours - fork).max() <= 1e-4 * max(1.0, np.abs(fork).max())
