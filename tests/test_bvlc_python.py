"""BVLC's own pycaffe helpers, run beside ours on randomized inputs: same results.

BVLC 1.0 master's python/caffe/{io,classifier,detector,net_spec,coord_map,draw}.py come
from the reference tarball through tests/bvlc_pycaffe.py (which says what its stand-ins
provide). Where BVLC's result is a plain bug, ours differs on purpose and the test says so
where it leaves the case out (see the comments at each).
"""
import functools
import http.server
import sys
import threading
import warnings

import numpy as np
import pytest
from google.protobuf import text_format

pytest.importorskip("skimage", reason="BVLC's caffe.io imports scikit-image (the io extra)")
pytest.importorskip("six", reason="BVLC's net_spec imports six (the test extra has it)")
pytest.importorskip("pydot", reason="BVLC's draw imports pydot (the draw extra)")
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

import caffe  # noqa: E402
from caffe import classifier as our_classifier  # noqa: E402
from caffe import coord_map as our_coord_map  # noqa: E402
from caffe import detector as our_detector  # noqa: E402
from caffe import draw as our_draw  # noqa: E402
from caffe import io as our_io  # noqa: E402
from caffe import net as our_net  # noqa: E402
from caffe import net_spec as our_net_spec  # noqa: E402
from caffe.proto import caffe_pb2  # noqa: E402
from tests.bvlc_pycaffe import (FloatSlices, StandInNet, WithToString,  # noqa: E402
                                 load_bvlc_pycaffe)
from tests.conftest import shared_path  # noqa: E402

# Modest example counts: the whole file runs in well under a minute on two busy cores.
FEW = settings(max_examples=25, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture,
                                      HealthCheck.too_slow])
SOME = settings(FEW, max_examples=60)


@pytest.fixture(scope="module")
def bvlc(tmp_path_factory):
    """BVLC's modules by name: bvlc.io, bvlc.classifier, ... (and bvlc.caffe)."""
    return load_bvlc_pycaffe(tmp_path_factory.mktemp("bvlc"))


def test_both_packages_are_loaded_side_by_side(bvlc):
    assert bvlc.io is not our_io and bvlc.io.Transformer is not our_io.Transformer
    assert sys.modules["caffe"] is caffe and caffe.io is our_io
    assert bvlc.classifier.caffe is bvlc.caffe and bvlc.caffe.Net is StandInNet


# -- Transformer -----------------------------------------------------------------------
@st.composite
def transformer_cases(draw):
    k = draw(st.sampled_from([1, 3, 4]))
    h, w = draw(st.integers(2, 9)), draw(st.integers(2, 9))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    case = {"shape": (draw(st.integers(1, 2)), k, h, w),
            # (2, 1, 0) also swaps height and width: a square blob keeps its size.
            "transpose": draw(st.sampled_from([(2, 0, 1), (2, 1, 0)] if h == w else
                                              [(2, 0, 1)]))}
    if draw(st.booleans()):
        case["channel_swap"] = tuple(int(i) for i in rng.permutation(k))
        if draw(st.booleans()):
            case["channel_swap"] = list(case["channel_swap"])
    if draw(st.booleans()):
        case["raw_scale"] = draw(st.sampled_from([255, 255.0, np.float64(127.5), 0.7]))
    mean = draw(st.sampled_from([None, "channel", "pixel", "resized", "grey2d"]))
    if mean == "channel":
        case["mean"] = rng.uniform(-50, 150, k)
    elif mean == "pixel":
        case["mean"] = rng.uniform(-50, 150, (k, h, w))
    elif mean == "resized":
        # e.g. the 3 x 256 x 256 ImageNet mean for a 227 x 227 input
        size = (draw(st.integers(2, 12)), draw(st.integers(2, 12)))
        dtype = draw(st.sampled_from([np.float64, np.float32, np.uint8]))
        case["mean"] = rng.uniform(0, 255, (k,) + size).astype(dtype)
    elif mean == "grey2d" and k == 1:
        case["mean"] = rng.uniform(0, 255, (h, w))
    if draw(st.booleans()):
        case["input_scale"] = draw(st.sampled_from([0.017, 2, np.float32(0.5)]))
    image_hw = (h, w) if draw(st.booleans()) else (draw(st.integers(2, 12)),
                                                   draw(st.integers(2, 12)))
    dtype = draw(st.sampled_from([np.float32, np.float64, np.uint8]))
    image = rng.random(image_hw + (k,))
    case["image"] = (image * 255).astype(np.uint8) if dtype == np.uint8 else image.astype(dtype)
    return case


def _configure(module, case):
    t = module.Transformer({"data": case["shape"]})
    t.set_transpose("data", case.get("transpose", (2, 0, 1)))
    for setting in ("channel_swap", "raw_scale", "mean", "input_scale"):
        if setting in case:
            getattr(t, "set_" + setting)("data", case[setting])
    return t


def _assert_same(ours, theirs):
    """Same values and the same dtype (BVLC's dtypes are part of its behaviour)."""
    theirs = np.asarray(theirs)
    assert ours.dtype == theirs.dtype, (ours.dtype, theirs.dtype)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    np.testing.assert_array_equal(ours, theirs)


@FEW
@given(case=transformer_cases())
def test_transformer_matches_bvlc(bvlc, case):
    ours, theirs = _configure(our_io, case), _configure(bvlc.io, case)
    if "mean" in case:
        # BVLC keeps a 2-D mean of a one-channel blob as it is; it broadcasts the same.
        theirs_mean = np.asarray(theirs.mean["data"])
        _assert_same(ours.mean["data"], theirs_mean.reshape(ours.mean["data"].shape))
    # BVLC's preprocess writes its in-place steps into a float32 caller's array: give it
    # a copy (ours leaves the caller's array alone, checked below).
    image = case["image"]
    kept = image.copy()
    out = ours.preprocess("data", image)
    _assert_same(out, theirs.preprocess("data", image.copy()))
    np.testing.assert_array_equal(image, kept)
    assert out.flags.c_contiguous
    if 1 in out.shape:
        # BVLC's deprocess squeezes every axis of size 1, a channel or a row too, and then
        # cannot transpose (a plain bug): ours drops only the batch axis.
        return
    for blob in (out[np.newaxis], out.astype(np.float64)):
        _assert_same(ours.deprocess("data", blob), theirs.deprocess("data", blob.copy()))


def test_deprocess_float32_feeds_img_as_ubyte(bvlc):
    # The style-transfer crash: with VGG's mean, white comes back from float64 arithmetic
    # as 1.0000000182, which skimage.img_as_ubyte refuses; float32 rounds it to 1.0.
    from skimage import img_as_ubyte
    case = {"shape": (1, 3, 4, 4), "channel_swap": (2, 1, 0), "raw_scale": 255.0,
            "mean": np.array([103.939, 116.779, 123.68])}
    image = np.ones((4, 4, 3), np.float32)
    for module in (our_io, bvlc.io):
        t = _configure(module, case)
        net_input = t.preprocess("data", image)[np.newaxis]
        restored = t.deprocess("data", net_input)
        assert restored.dtype == np.float32
        assert img_as_ubyte(restored).min() == 255
    in_float64 = (net_input[0].astype(np.float64) + case["mean"][:, None, None]) / 255.0
    with pytest.raises(ValueError, match="between -1 and 1"):
        img_as_ubyte(in_float64)


def test_set_mean_constant_mean_of_another_size(bvlc):
    # BVLC scales a mean of another size by (max - min): 0 / 0 for a constant mean, so its
    # resized mean is NaN. Ours stays the constant (a plain bug, left out of the match).
    mean = np.full((3, 6, 6), 104.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # BVLC's 0 / 0
        theirs = _configure(bvlc.io, {"shape": (1, 3, 4, 4), "mean": mean})
    assert np.isnan(theirs.mean["data"]).all()
    ours = _configure(our_io, {"shape": (1, 3, 4, 4), "mean": mean})
    assert ours.mean["data"].shape == (3, 4, 4) and np.all(ours.mean["data"] == 104.0)


# -- resize_image and oversample ---------------------------------------------------------
@SOME
@given(k=st.sampled_from([1, 2, 3, 4]), h=st.integers(1, 10), w=st.integers(1, 10),
       new=st.tuples(st.integers(1, 12), st.integers(1, 12)), order=st.integers(0, 3),
       dtype=st.sampled_from([np.float32, np.float64]), constant=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_resize_image_matches_bvlc(bvlc, k, h, w, new, order, dtype, constant, seed):
    rng = np.random.default_rng(seed)
    im = (np.full((h, w, k), 0.3) if constant else rng.uniform(-2, 5, (h, w, k))).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # SciPy's zoom on tiny images
        _assert_same(our_io.resize_image(im, new, order), bvlc.io.resize_image(im, new, order))


@SOME
@given(n=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9), k=st.integers(1, 4),
       data=st.data(), seed=st.integers(0, 2 ** 32 - 1))
def test_oversample_matches_bvlc(bvlc, n, h, w, k, data, seed):
    crop = (data.draw(st.integers(1, h)), data.draw(st.integers(1, w)))
    rng = np.random.default_rng(seed)
    images = [rng.random((h, w, k)) for _ in range(n)]
    _assert_same(our_io.oversample(images, crop), bvlc.io.oversample(images, np.array(crop)))


# -- load_image --------------------------------------------------------------------------
def _tiff16(path, rgb16):
    import tifffile
    tifffile.imwrite(path, rgb16, photometric="rgb")


@st.composite
def image_files(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 32 - 1)))
    kind = draw(st.sampled_from(["RGB", "RGBA", "L", "I;16", "1", "P", "P+transparency",
                                 "RGB16", "F"]))
    if kind in ("RGB", "RGBA", "L", "1", "P", "P+transparency"):
        ext = draw(st.sampled_from({"RGB": ["png", "jpg", "bmp", "tif", "webp"],
                                    "RGBA": ["png", "tif", "webp"],
                                    "L": ["png", "jpg", "bmp", "tif"],
                                    "1": ["png", "bmp", "tif"],
                                    "P": ["png", "bmp", "tif"],
                                    "P+transparency": ["png"]}[kind]))
    else:
        ext = {"I;16": draw(st.sampled_from(["png", "tif"])), "RGB16": "tif", "F": "tif"}[kind]
    rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
    orientation = draw(st.sampled_from([None, 3, 6, 8])) if ext in ("jpg", "png", "webp") \
        else None
    return dict(h=h, w=w, kind=kind, ext=ext, rgba=rgba, orientation=orientation,
                rgb16=rng.integers(0, 65536, (h, w, 3), dtype=np.uint16),
                grey16=rng.integers(0, 65536, (h, w), dtype=np.uint16),
                floats=rng.random((h, w)).astype(np.float32))


def _write_image(path, spec):
    kind, rgba = spec["kind"], spec["rgba"]
    if kind == "RGB16":
        _tiff16(path, spec["rgb16"])
        return
    image = {"RGB": lambda: Image.fromarray(rgba[..., :3]),
             "RGBA": lambda: Image.fromarray(rgba),
             "L": lambda: Image.fromarray(rgba[..., 0]),
             "I;16": lambda: Image.fromarray(spec["grey16"]),
             "1": lambda: Image.fromarray(rgba[..., 0] > 127),
             "P": lambda: Image.fromarray(rgba[..., :3]).quantize(5),
             "P+transparency": lambda: Image.fromarray(rgba[..., :3]).quantize(5),
             "F": lambda: Image.fromarray(spec["floats"])}[kind]()
    options = {}
    if kind == "P+transparency":
        options["transparency"] = 1
    if spec["ext"] == "webp":
        options["lossless"] = True
    if spec["orientation"]:
        exif = image.getexif()
        exif[0x0112] = spec["orientation"]
        options["exif"] = exif.tobytes()
    image.save(path, **options)


def _load_both(bvlc, source, color):
    """load_image of both; `source` makes the argument (called once for each side)."""
    return our_io.load_image(source(), color), bvlc.io.load_image(source(), color)


@SOME
@given(spec=image_files(), color=st.booleans(),
       how=st.sampled_from(["path", "pathlib", "file object", "file URL"]))
def test_load_image_matches_bvlc(bvlc, tmp_path, spec, color, how):
    path = tmp_path / f"image.{spec['ext']}"
    _write_image(path, spec)
    opened = []

    def source():
        if how == "path":
            return str(path)
        if how == "pathlib":
            return path
        if how == "file URL":
            return path.as_uri()
        opened.append(open(path, "rb"))
        return opened[-1]
    try:
        ours, theirs = _load_both(bvlc, source, color)
    finally:
        for f in opened:
            f.close()
    _assert_same(ours, theirs)
    assert ours.shape == (spec["h"], spec["w"], 3 if color else 1)


@pytest.fixture
def http_folder(tmp_path):
    """A local HTTP server over tmp_path: the URL of its root."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize("name", ["cat.jpg", "rgb16.tif"])
def test_load_image_from_an_http_url_matches_bvlc(bvlc, tmp_path, http_folder, name):
    # BVLC's web demo hands load_image URLs and uploaded file objects alike.
    rng = np.random.default_rng(7)
    if name.endswith(".tif"):
        _tiff16(tmp_path / name, rng.integers(0, 65536, (5, 4, 3), dtype=np.uint16))
    else:
        Image.fromarray(rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)).save(tmp_path / name)
    for color in (True, False):
        ours, theirs = _load_both(bvlc, lambda: http_folder + name, color)
        _assert_same(ours, theirs)
    with pytest.raises(OSError, match="could not download image URL .*missing.png"):
        our_io.load_image(http_folder + "missing.png")


def test_load_image_where_bvlc_has_no_image(bvlc, tmp_path):
    # Cases where BVLC's reader, under today's scikit-image, gives no H x W x 3 / H x W x 1
    # image; ours keeps load_image's contract (a plain bug of BVLC's, left out of the match).
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)
    # Grey with alpha: BVLC returns the two channels (or, with color=False, crashes).
    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(tmp_path / "la.png")
    assert bvlc.io.load_image(str(tmp_path / "la.png")).shape == (6, 5, 2)
    with pytest.raises(ValueError):
        bvlc.io.load_image(str(tmp_path / "la.png"), False)
    grey = np.tile(rgb[..., :1] / np.float32(255), (1, 1, 3))
    _assert_same(our_io.load_image(str(tmp_path / "la.png")), grey.astype(np.float32))
    # A GIF: imageio reads all frames, so BVLC returns a 1 x H x W x 3 stack.
    Image.fromarray(rgb).save(tmp_path / "rgb.gif")
    assert bvlc.io.load_image(str(tmp_path / "rgb.gif")).shape == (1, 6, 5, 3)
    with Image.open(tmp_path / "rgb.gif") as gif:
        first = np.asarray(gif.convert("RGB")) / np.float32(255)
    _assert_same(our_io.load_image(str(tmp_path / "rgb.gif")), first.astype(np.float32))
    # CMYK JPEG: BVLC takes C, M, Y as R, G, B; ours converts.
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    with Image.open(tmp_path / "cmyk.jpg") as cmyk:
        converted = np.asarray(cmyk.convert("RGB"))
    np.testing.assert_allclose(our_io.load_image(str(tmp_path / "cmyk.jpg")),
                               converted / 255.0, atol=1e-6)


# -- proto / datum conversions ----------------------------------------------------------
@SOME
@given(shape=st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
       with_diff=st.booleans(), dtype=st.sampled_from([np.float32, np.float64, np.int64]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_blob_converters_match_bvlc(bvlc, shape, with_diff, dtype, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.standard_normal(shape) * 100).astype(dtype)
    diff = (rng.standard_normal(shape)).astype(dtype) if with_diff else None
    ours, theirs = our_io.array_to_blobproto(arr, diff), bvlc.io.array_to_blobproto(arr, diff)
    assert ours.SerializeToString() == theirs.SerializeToString()
    for return_diff in (False, True):
        _same_or_both_refuse(lambda io: io.blobproto_to_array(ours, return_diff), bvlc)
    vec = our_io.arraylist_to_blobprotovector_str([arr, arr * 2])
    assert vec == bvlc.io.arraylist_to_blobprotovector_str([arr, arr * 2])
    _same_or_both_refuse(lambda io: io.blobprotovector_str_to_arraylist(vec), bvlc)


def _same_or_both_refuse(call, bvlc):
    """call(io module) gives the same on both sides, or raises ValueError on both (ours
    with a message, theirs from NumPy)."""
    try:
        theirs = call(bvlc.io)
    except ValueError:
        with pytest.raises(ValueError, match="declares shape"):
            call(our_io)
        return
    ours = call(our_io)
    if isinstance(theirs, list):
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_same(a, b)
    else:
        _assert_same(ours, theirs)


def test_legacy_blobproto_shape_matches_bvlc(bvlc):
    blob = caffe_pb2.BlobProto(num=1, channels=2, height=2, width=3,
                               data=np.arange(12.0).tolist())
    _assert_same(our_io.blobproto_to_array(blob), bvlc.io.blobproto_to_array(blob))


@SOME
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4)),
       dtype=st.sampled_from([np.uint8, np.float32, np.float64, np.int32]),
       label=st.one_of(st.none(), st.integers(-5, 1000)), seed=st.integers(0, 2 ** 32 - 1))
def test_datum_converters_match_bvlc(bvlc, shape, dtype, label, seed):
    rng = np.random.default_rng(seed)
    arr = (rng.random(shape) * 255).astype(dtype)
    ours = our_io.array_to_datum(arr, label)
    theirs = bvlc.io.array_to_datum(arr.view(WithToString), label)
    assert ours.SerializeToString() == theirs.SerializeToString()
    _assert_same(our_io.datum_to_array(ours), bvlc.io.datum_to_array(theirs))


# -- Classifier and Detector -------------------------------------------------------------
TINY_NET = """name: "tiny"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: %d dim: 3 dim: 7 dim: 7 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 }
                            bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(prototxt, caffemodel) of a small classifier with random weights; batch 4 so that
    forward_all pads the last batch."""
    folder = tmp_path_factory.mktemp("tiny")
    model, weights = folder / "tiny.prototxt", folder / "tiny.caffemodel"
    model.write_text(TINY_NET % 4)
    caffe.set_random_seed(5)
    our_net.Net(str(model), caffe.TEST).save(str(weights))
    return str(model), str(weights)


@FEW
@given(n=st.integers(1, 3), image_dims=st.sampled_from([None, (7, 7), (9, 11), (12, 10)]),
       mean=st.sampled_from([None, "channel", "pixel"]),
       raw_scale=st.sampled_from([None, 255.0]), swap=st.booleans(),
       input_scale=st.sampled_from([None, 0.5]), oversample=st.booleans(),
       seed=st.integers(0, 2 ** 32 - 1))
def test_classifier_predict_matches_bvlc(bvlc, tiny_model, n, image_dims, mean, raw_scale,
                                         swap, input_scale, oversample, seed):
    rng = np.random.default_rng(seed)
    mean = {None: None, "channel": rng.uniform(0, 1, 3),
            "pixel": rng.uniform(0, 1, (3, 16, 16))}[mean]   # resized to 7 x 7
    kwargs = dict(image_dims=image_dims, mean=mean, raw_scale=raw_scale,
                  channel_swap=(2, 1, 0) if swap else None, input_scale=input_scale)
    ours = our_classifier.Classifier(*tiny_model, **kwargs)
    theirs = bvlc.classifier.Classifier(*tiny_model, **kwargs)
    images = [rng.random((int(rng.integers(5, 14)), int(rng.integers(5, 14)), 3))
              .astype(np.float32) for _ in range(n)]
    expected = theirs.predict(images, oversample)
    got = ours.predict(images, oversample)
    assert got.shape == expected.shape == (n, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.fixture(scope="module")
def detectors(bvlc, tiny_model):
    """Ours and BVLC's Detector over the tiny net, with and without context padding."""
    mean = np.random.default_rng(2).uniform(0, 200, (3, 7, 7))
    kwargs = dict(mean=mean, raw_scale=255.0, channel_swap=(2, 1, 0))
    return {pad: (our_detector.Detector(*tiny_model, context_pad=pad, **kwargs),
                  bvlc.detector.Detector(*tiny_model, context_pad=pad, **kwargs))
            for pad in (None, 1, 2)}


def test_detector_crop_mean_matches_bvlc(detectors):
    for pad, (ours, theirs) in detectors.items():
        _assert_same(np.asarray(ours.crop_dims), np.asarray(theirs.crop_dims))
        if pad:
            _assert_same(ours.crop_mean, theirs.crop_mean)


@SOME
@given(pad=st.sampled_from([None, 1, 2]), h=st.integers(8, 20), w=st.integers(8, 20),
       data=st.data(), seed=st.integers(0, 2 ** 32 - 1))
def test_detector_crop_matches_bvlc(detectors, pad, h, w, data, seed):
    ours, theirs = detectors[pad]
    y0, x0 = data.draw(st.integers(0, h - 2)), data.draw(st.integers(0, w - 2))
    window = np.array([y0, x0, data.draw(st.integers(y0 + 1, h)),
                       data.draw(st.integers(x0 + 1, w))])
    image = np.random.default_rng(seed).random((h, w, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _assert_same(ours.crop(image, window), theirs.crop(image.view(FloatSlices), window))


def test_detect_windows_matches_bvlc(detectors, tmp_path):
    # Without context padding (BVLC's padded crop slices with floats, which today's NumPy
    # refuses inside detect_windows; the crops themselves are compared above).
    rng = np.random.default_rng(4)
    files = []
    for i, size in enumerate([(10, 12), (15, 9)]):
        files.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(files[-1])
    windows = [(files[0], [np.array([0, 0, 7, 7]), np.array([2, 3, 9, 12])]),
               (files[1], [np.array([1, 1, 15, 9])] * 3)]
    ours, theirs = detectors[None]
    got, expected = ours.detect_windows(windows), theirs.detect_windows(windows)
    assert [(d["filename"], tuple(d["window"])) for d in got] == \
        [(d["filename"], tuple(d["window"])) for d in expected]
    np.testing.assert_allclose([d["prediction"] for d in got],
                               [d["prediction"] for d in expected], rtol=1e-6, atol=1e-7)


# -- NetSpec -----------------------------------------------------------------------------
@st.composite
def net_specs(draw):
    """A recipe of layers: (name or None, type, bottoms (indices into earlier tops),
    params, ntop), applied to either module's NetSpec by _build."""
    recipe = [("data", "DummyData", [], dict(shape=[dict(dim=[2, 3, 8, 8])]), 1)]
    for i in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["Convolution", "Pooling", "ReLU", "InnerProduct",
                                     "Eltwise", "Concat", "Slice", "Dropout", "Silence",
                                     "Python", "Crop"]))
        bottom = draw(st.integers(0, len(recipe) - 1))
        name = draw(st.sampled_from([None, f"l{i}", f"top_{i}"]))
        params, ntop, bottoms = {}, 1, [bottom]
        if kind == "Convolution":
            params = dict(num_output=draw(st.integers(1, 4)), kernel_size=draw(st.integers(1, 3)),
                          pad=draw(st.integers(0, 1)), weight_filler=dict(type="xavier"),
                          param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
            if draw(st.booleans()):
                params["bias_term"] = False
        elif kind == "Pooling":
            params = dict(kernel_size=2, stride=2, pool=draw(st.sampled_from(["MAX", "AVE"])))
        elif kind == "ReLU":
            params = dict(in_place=draw(st.booleans()), negative_slope=0.1)
        elif kind == "InnerProduct":
            params = dict(num_output=3, include=dict(phase=draw(st.sampled_from([0, 1]))))
        elif kind in ("Eltwise", "Concat"):
            bottoms = [bottom, draw(st.integers(0, len(recipe) - 1))]
            if kind == "Eltwise":
                params = dict(operation="SUM", coeff=[1.0, -1.0])
        elif kind == "Slice":
            params = dict(slice_point=[1], axis=1)
            ntop = 2
        elif kind == "Dropout":
            params = dict(dropout_ratio=0.25, loss_weight=[0.0])
        elif kind == "Silence":
            ntop = 0
        elif kind == "Python":
            params = dict(python_param=dict(module="m", layer="L", param_str="{'a': 1}"))
        elif kind == "Crop":
            bottoms = [bottom, 0]
            params = dict(crop_param=dict(axis=2, offset=[1, 0]))
        recipe.append((name, kind, bottoms, params, ntop))
    return recipe


def _build(module, recipe):
    """The recipe's NetSpec and its unnamed tops, built with `module`'s layers."""
    L, P = module.layers, module.params
    n = module.NetSpec()
    tops, unnamed = [], []
    for name, kind, bottoms, params, ntop in recipe:
        params = dict(params)
        if "pool" in params:
            params["pool"] = getattr(P.Pooling, params["pool"])
        if "operation" in params:
            params["operation"] = getattr(P.Eltwise, params["operation"])
        inputs = [tops[b] for b in bottoms]
        made = getattr(L, kind)(*inputs, ntop=ntop, **params)
        outs = list(made) if ntop > 1 else [made]
        if ntop == 0 or name is not None:
            if ntop > 1:
                for j, top in enumerate(outs):
                    n[f"{name or 'slice'}_{j}_{len(tops)}"] = top
            else:
                n[name or f"silence{len(tops)}"] = made
        else:
            unnamed.extend(outs)
        tops.extend(outs if ntop else [tops[0]])
    return n, unnamed


@SOME
@given(recipe=net_specs())
def test_net_spec_text_matches_bvlc(bvlc, recipe):
    def text(module):
        n, unnamed = _build(module, recipe)
        whole = text_format.MessageToString(n.to_proto())
        # Top-level to_proto: every unnamed top, auto-named <Type><count>.
        loose = text_format.MessageToString(module.to_proto(*unnamed)) if unnamed else ""
        return whole, loose
    assert text(our_net_spec) == text(bvlc.net_spec)


# -- coord_map ---------------------------------------------------------------------------
@st.composite
def spatial_chains(draw):
    steps = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["Convolution", "Pooling", "Deconvolution", "ReLU",
                                     "Crop"]))
        if kind == "ReLU":
            steps.append((kind, {}))
        elif kind == "Crop":
            steps.append((kind, dict(crop_param=dict(axis=2, offset=[draw(st.integers(0, 3))]))))
        else:
            params = dict(kernel_size=draw(st.integers(1, 5)), stride=draw(st.integers(1, 3)),
                          pad=draw(st.integers(0, 2)))
            if kind != "Pooling" and draw(st.booleans()):
                params["dilation"] = draw(st.integers(1, 3))
            if kind == "Convolution" and draw(st.integers(0, 9)) == 0:
                # Refused by both (BVLC asserts on legacy keyword arguments beside a
                # kernel_size only; otherwise it fails on a KeyError, left out here).
                params["pad_h"] = params["pad"]
            elif kind == "Deconvolution" or draw(st.booleans()):
                params = dict(convolution_param=params)
            steps.append((kind, params))
    return steps


def _chain(module, steps):
    L = module.layers
    data = L.Input(shape=dict(dim=[1, 3, 64, 64]))
    top = data
    for kind, params in steps:
        top = L.Crop(top, data, **params) if kind == "Crop" else getattr(L, kind)(top, **params)
    return data, top


def _coord_result(module, net_spec, steps):
    data, top = _chain(net_spec, steps)
    try:
        ax, a, b = module.coord_map_from_to(top, data)
    except Exception as e:   # noqa: BLE001  compared by kind below
        return ("raises", isinstance(e, AssertionError))
    result = [ax, np.asarray(a, float).tolist(), np.asarray(b, float).tolist()]
    try:
        crop = module.crop(top, data)
        result.append(text_format.MessageToString(net_spec.to_proto(crop)))
    except AssertionError:
        result.append("crop refused")
    except AttributeError:
        # BVLC's crop tests (a == 1).all() on the plain int scale of a chain without a
        # Convolution, Pooling or Deconvolution, and crashes (a plain bug); ours crops.
        assert module is not our_coord_map and np.ndim(a) == 0
        result.append("crashed")
    return result


@SOME
@given(steps=spatial_chains())
def test_coord_map_matches_bvlc(bvlc, steps):
    ours = _coord_result(our_coord_map, our_net_spec, steps)
    theirs = _coord_result(bvlc.coord_map, bvlc.net_spec, steps)
    if theirs[-1] == "crashed":
        ours, theirs = ours[:-1], theirs[:-1]
    assert ours == theirs


def test_coord_map_fcn_skip_crop_matches_bvlc(bvlc):
    # FCN-16s' skip: the upsampled score is cropped onto pool4's score and the input.
    def fcn(net_spec, coord_map):
        L = net_spec.layers
        data = L.Input(shape=dict(dim=[1, 3, 100, 100]))
        pool4 = L.Pooling(L.Convolution(data, kernel_size=3, pad=100, num_output=2),
                          kernel_size=2, stride=2)
        score = L.Convolution(L.Pooling(pool4, kernel_size=2, stride=2), kernel_size=7,
                              num_output=2)
        up = L.Deconvolution(score, convolution_param=dict(kernel_size=4, stride=2,
                                                           num_output=2))
        score_pool4 = L.Convolution(pool4, kernel_size=1, num_output=2)
        fuse = L.Eltwise(up, coord_map.crop(score_pool4, up))
        out = L.Deconvolution(fuse, convolution_param=dict(kernel_size=4, stride=2,
                                                           num_output=2))
        return text_format.MessageToString(net_spec.to_proto(coord_map.crop(out, data)))
    assert fcn(our_net_spec, our_coord_map) == fcn(bvlc.net_spec, bvlc.coord_map)


# -- draw ----------------------------------------------------------------------------------
DRAW_SETTINGS = st.tuples(st.sampled_from(["LR", "TB", "BT"]), st.booleans(),
                          st.sampled_from([None, caffe.TRAIN, caffe.TEST]), st.booleans())


def _both_dots(bvlc, net, rankdir, label_edges, phase, display_lrm):
    args = (net, rankdir, label_edges, phase, display_lrm)
    return (our_draw.get_pydot_graph(*args).to_string(),
            bvlc.draw.get_pydot_graph(*args).to_string())


@SOME
@given(recipe=net_specs(), name=st.sampled_from(["", "net", "a net"]), how=DRAW_SETTINGS)
def test_draw_dot_source_matches_bvlc(bvlc, recipe, name, how):
    net = _build(our_net_spec, recipe)[0].to_proto()
    net.name = name
    ours, theirs = _both_dots(bvlc, net, *how)
    assert ours == theirs


@pytest.mark.parametrize("model", ["bvlc_googlenet", "lenet", "bvlc_reference_rcnn_ilsvrc13",
                                   "cifar10_full"])
def test_draw_reference_models_match_bvlc(bvlc, model):
    path = shared_path("models", f"{model}.prototxt")
    from caffe.formats import read_net_param
    net = read_net_param(path)
    for how in [("LR", True, None, False), ("TB", True, caffe.TEST, True),
                ("BT", False, caffe.TRAIN, True)]:
        ours, theirs = _both_dots(bvlc, net, *how)
        assert ours == theirs, (model, how)


def test_draw_phase_rule_without_phase(bvlc):
    # A rule with only a stage holds in every phase (Caffe's StateMeetsRule); BVLC's draw
    # reads its unset phase as TRAIN and leaves the layer out of TEST drawings, a net Caffe
    # never builds. Ours draws what Caffe builds (a plain bug, left out of the match).
    net = caffe_pb2.NetParameter()
    text_format.Parse('layer { name: "a" type: "Input" top: "x" include { stage: "s" } }', net)
    assert "a\\n(Input)" in our_draw.get_pydot_graph(net, "LR", phase=caffe.TEST).to_string()
    assert "a\\n(Input)" not in bvlc.draw.get_pydot_graph(net, "LR",
                                                         phase=caffe.TEST).to_string()


def test_api_names_match_bvlc(bvlc):
    # Every public function and class of the six modules exists on our side.
    ours = {"io": our_io, "classifier": our_classifier, "detector": our_detector,
            "net_spec": our_net_spec, "coord_map": our_coord_map, "draw": our_draw}
    for name, module in ours.items():
        theirs = getattr(bvlc, name)
        public = [k for k, v in vars(theirs).items()
                  if not k.startswith("_") and callable(v)
                  and getattr(v, "__module__", None) == theirs.__name__]
        missing = [k for k in public if not hasattr(module, k)]
        assert not missing, (name, missing)

