"""Classifier and Detector on a tiny net, and Caffe's "00-classification" flow on CaffeNet."""
import numpy as np
import pytest
import torch
from PIL import Image

import caffe
from caffe import io as cio
from caffe.classifier import Classifier
from caffe.detector import Detector
from caffe.errors import CaffeError
from caffe.proto import caffe_pb2
from tests.conftest import shared_path

TINY = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 4 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
MEAN = np.array([0.1, 0.2, 0.3])      # per channel, in the net's (BGR) order


def need_types(*types):
    missing = sorted(set(types) - set(caffe.layer_type_list()))
    if missing:
        pytest.fail(f"layer types not registered: {', '.join(missing)}")


@pytest.fixture
def tiny(tmp_path):
    need_types("Input", "Convolution", "ReLU", "InnerProduct", "Softmax")
    model = tmp_path / "tiny.prototxt"
    model.write_text(TINY)
    weights = tmp_path / "tiny.caffemodel"
    caffe.Net(str(model), caffe.TEST, dtype=torch.float64).save(str(weights))
    return str(model), str(weights)


def reference_net(tiny):
    return caffe.Net(tiny[0], tiny[1], caffe.TEST, dtype=torch.float64)


def by_hand(net, crops, raw_scale):
    """Preprocess H x W x 3 crops as the Transformer should, and run them."""
    x = np.stack([(c.transpose(2, 0, 1)[[2, 1, 0]] * raw_scale - MEAN[:, None, None])
                  for c in crops])
    net.blobs["data"].reshape(*x.shape)
    net.blobs["data"].data[...] = x
    return net.forward()["prob"].copy()


def images(n, shape=(10, 12, 3), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random(shape).astype(np.float32) for _ in range(n)]


def test_classifier_centre_crop(tiny):
    clf = Classifier(*tiny, image_dims=(8, 8), mean=MEAN, raw_scale=2.0,
                     channel_swap=(2, 1, 0), dtype=torch.float64)
    inputs = images(5)
    pred = clf.predict(inputs, oversample=False)
    assert pred.shape == (5, 5)
    np.testing.assert_allclose(pred.sum(1), 1, rtol=1e-6)
    # Resize to 8x8, then the centre 6x6 starts at 8/2 - 6/2 = 1.
    crops = [cio.resize_image(im, (8, 8))[1:7, 1:7] for im in inputs]
    np.testing.assert_allclose(pred, by_hand(reference_net(tiny), crops, 2.0), rtol=1e-5)


def test_classifier_oversample_averages_ten_crops(tiny):
    clf = Classifier(*tiny, image_dims=(9, 10), mean=MEAN, raw_scale=2.0,
                     channel_swap=(2, 1, 0), dtype=torch.float64)
    inputs = images(2)
    pred = clf.predict(inputs)
    assert pred.shape == (2, 5)
    crops = cio.oversample([cio.resize_image(im, (9, 10)) for im in inputs], (6, 6))
    expected = by_hand(reference_net(tiny), list(crops), 2.0).reshape(2, 10, 5).mean(1)
    np.testing.assert_allclose(pred, expected, rtol=1e-5)


def test_classifier_checks_its_mean(tiny):
    # A per-pixel mean of another size is resized to the input, as BVLC's set_mean does
    # (tests/test_bvlc_python.py compares it with BVLC's); one of other channels is refused.
    clf = Classifier(*tiny, mean=np.full((3, 8, 8), 2.0))
    in_ = clf.inputs[0]
    assert clf.transformer.mean[in_].shape == (3,) + clf.blobs[in_].data.shape[2:]
    with pytest.raises(ValueError, match="must be per-channel"):
        Classifier(*tiny, mean=np.zeros((2, 8, 8)))


def test_detector_windows(tiny, tmp_path):
    image = (np.random.default_rng(1).random((20, 30, 3)) * 255).astype(np.uint8)
    path = tmp_path / "scene.png"
    Image.fromarray(image).save(path)
    det = Detector(*tiny, mean=MEAN, raw_scale=2.0, channel_swap=(2, 1, 0),
                   dtype=torch.float64)
    windows = [(2, 3, 12, 15), (0, 0, 20, 30), (5, 5, 11, 11)]
    detections = det.detect_windows([(str(path), windows)])
    assert [d["filename"] for d in detections] == [str(path)] * 3
    assert [tuple(d["window"]) for d in detections] == windows
    loaded = cio.load_image(str(path))
    crops = [cio.resize_image(loaded[y0:y1, x0:x1], (6, 6)) for y0, x0, y1, x1 in windows]
    expected = by_hand(reference_net(tiny), crops, 2.0)
    np.testing.assert_allclose(np.stack([d["prediction"] for d in detections]), expected,
                               rtol=1e-5)


def test_detector_context_pad_fills_outside_with_the_mean(tiny):
    det = Detector(*tiny, mean=MEAN, raw_scale=2.0, channel_swap=(2, 1, 0), context_pad=1,
                   dtype=torch.float64)
    assert tuple(det.crop_dims) == (6, 6, 3)
    image = np.ones((20, 30, 3), np.float32)
    # Window (0, 0, 4, 4) grows by 6 / 4 to rows and columns -1 .. 6: one row and one
    # column of the 6x6 crop lie outside the image and hold the mean, in raw RGB space.
    out = det.crop(image, np.array([0, 0, 4, 4]))
    assert out.shape == (6, 6, 3)
    raw_mean = MEAN[::-1] / 2.0
    np.testing.assert_allclose(out[0, 0], raw_mean, rtol=1e-6)
    np.testing.assert_allclose(out[3, 0], raw_mean, rtol=1e-6)
    np.testing.assert_allclose(out[1:, 1:], 1.0, rtol=1e-6)


def test_detector_selective_search_is_external(tiny):
    det = Detector(*tiny)
    with pytest.raises(CaffeError, match="selective_search_ijcv_with_python"):
        det.detect_selective_search(["a.jpg"])


# -- Caffe's examples/00-classification.ipynb, on weights we draw ourselves ----------------
CAFFENET_TYPES = ("Input", "Convolution", "ReLU", "Pooling", "LRN", "InnerProduct", "Dropout",
                  "Softmax")


def fill_gaussian(net, seed):
    """Fixed-seed Gaussian weights scaled by fan-in (so activations neither die nor blow up)."""
    gen = torch.Generator().manual_seed(seed)
    for blobs in net.params.values():
        w = blobs[0].data
        fan_in = int(np.prod(w.shape[1:]))
        w[...] = (torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5).numpy()
        blobs[1].data[...] = 0.01


def make_picture(tmp_path, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:240, 0:320] / 40.0
    rgb = np.stack([np.sin(x + seed), np.cos(y * 1.3), np.sin(x * y / 3)], axis=2) * 0.4 + 0.5
    rgb = np.clip(rgb + rng.normal(0, 0.05, rgb.shape), 0, 1)
    path = tmp_path / f"image{seed}.png"
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return cio.load_image(str(path))



@pytest.mark.slow
def test_caffenet_classification_flow(tmp_path):
    need_types(*CAFFENET_TYPES)
    model = str(shared_path("models", "bvlc_reference_caffenet.prototxt"))
    weights = str(tmp_path / "caffenet_gaussian.caffemodel")

    net = caffe.Net(model, caffe.TEST)
    fill_gaussian(net, seed=1701)
    net.save(weights)

    # The mean: a real Caffe mean file, averaged per channel (BGR) as the notebook does.
    mean_blob = caffe_pb2.BlobProto.FromString(
        shared_path("golden", "formats", "ResNet_mean.binaryproto").read_bytes())
    mu = cio.blobproto_to_array(mean_blob)[0].mean(1).mean(1)
    transformer = cio.Transformer({"data": net.blobs["data"].data.shape})
    transformer.set_transpose("data", (2, 0, 1))
    transformer.set_mean("data", mu)
    transformer.set_raw_scale("data", 255)
    transformer.set_channel_swap("data", (2, 1, 0))

    pictures = [make_picture(tmp_path, seed) for seed in range(3)]
    batch = np.stack([transformer.preprocess("data", p) for p in pictures])
    assert batch.shape == (3, 3, 227, 227)
    restored = transformer.deprocess("data", batch[0])
    np.testing.assert_allclose(restored, cio.resize_image(pictures[0], (227, 227)), atol=1e-4)

    net.blobs["data"].reshape(1, 3, 227, 227)
    net.blobs["data"].data[...] = batch[:1]
    expected = net.forward()["prob"][0].copy()
    del net

    net = caffe.Net(model, weights, caffe.TEST)
    net.blobs["data"].reshape(1, 3, 227, 227)
    net.blobs["data"].data[...] = batch[:1]
    prob = net.forward()["prob"][0]
    assert prob.shape == (1000,)
    np.testing.assert_allclose(prob, expected, rtol=1e-5, atol=1e-9)   # weights round trip
    assert abs(prob.sum() - 1) < 1e-4
    top5 = prob.argsort()[::-1][:5]
    assert np.all(np.diff(prob[top5]) <= 0) and prob[top5[0]] > 1.5 / 1000

    # Feature extraction over a small batch: fc7 after its in-place ReLU.
    net.blobs["data"].reshape(3, 3, 227, 227)
    net.blobs["data"].data[...] = batch
    out = net.forward()
    feats = net.blobs["fc7"].data.copy()
    assert feats.shape == (3, 4096) and feats.min() >= 0 and feats.max() > 0
    np.testing.assert_allclose(out["prob"][0], prob, rtol=1e-4, atol=1e-7)   # batch-independent
    assert not np.allclose(feats[0], feats[1])
