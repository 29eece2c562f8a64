"""py-faster-rcnn's own Python 2 layers, unchanged, in the Faster R-CNN nets.

Runs where PYCAFFE_PY_FASTER_RCNN names a checkout of rbgirshick/py-faster-rcnn (its code is
not ours to ship, so CI, without one, skips). Its `lib/` goes on sys.path as its
tools/_init_paths.py puts it, and its layers are imported as the prototxts name them
(`rpn.proposal_layer`, ...), translated from Python 2 as they load (caffe.layers.python2).
Only its compiled extensions are stood in for: `nms.gpu_nms` (CUDA) is not called with
cfg.USE_GPU_NMS off, `nms.cpu_nms` is its own pure-Python `nms.py_cpu_nms` (its Cython
cpu_nms.pyx no longer compiles against NumPy 2), and `utils.cython_bbox` is an equal NumPy
function unless a build of utils/bbox.pyx imports (it reads `np.float`, gone in NumPy 1.24).
"""
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import caffe
from caffe.layers import python2
from tests.frcnn.zf_net import GOLDEN, assert_equals_recorded_golden

CHECKOUT = os.environ.get("PYCAFFE_PY_FASTER_RCNN")
pytestmark = pytest.mark.skipif(not CHECKOUT, reason="PYCAFFE_PY_FASTER_RCNN is not set")


def _bbox_overlaps(boxes, query):
    """utils.cython_bbox.bbox_overlaps: IoU with the +1 pixel convention, (N, K)."""
    area = (query[:, 2] - query[:, 0] + 1) * (query[:, 3] - query[:, 1] + 1)
    iw = np.minimum(boxes[:, None, 2], query[None, :, 2]) - \
        np.maximum(boxes[:, None, 0], query[None, :, 0]) + 1
    ih = np.minimum(boxes[:, None, 3], query[None, :, 3]) - \
        np.maximum(boxes[:, None, 1], query[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    own = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return np.where((iw > 0) & (ih > 0), inter / (own[:, None] + area[None] - inter), 0.0)


@pytest.fixture(scope="module")
def lib():
    pytest.importorskip("fissix")
    pytest.importorskip("easydict", reason="py-faster-rcnn's config needs easydict")
    root = str(Path(CHECKOUT) / "lib")
    saved = dict(sys.modules)
    # Other tests' modules of the same names (our stand-in rpn.proposal_layer) step aside.
    packages = {p.name for p in Path(root).iterdir() if (p / "__init__.py").exists()}
    for name in [m for m in sys.modules if m.split(".")[0] in packages]:
        del sys.modules[name]
    sys.path.insert(0, root)
    caffe.set_python2_layers(True)     # config.py and friends compile as Python 3 as well
    python2.mark_root(root)
    stubs = {}
    try:
        import nms.py_cpu_nms
        stubs["nms.cpu_nms"] = types.SimpleNamespace(cpu_nms=nms.py_cpu_nms.py_cpu_nms)
        stubs["nms.gpu_nms"] = types.SimpleNamespace(gpu_nms=None)
        try:
            import utils.cython_bbox  # noqa: F401
        except (ImportError, AttributeError):     # bbox.pyx reads np.float at import
            stubs["utils.cython_bbox"] = types.SimpleNamespace(bbox_overlaps=_bbox_overlaps)
        sys.modules.update(stubs)
        from fast_rcnn.config import cfg
        cfg.USE_GPU_NMS = False
        yield cfg
    finally:
        caffe.set_python2_layers("auto")
        python2.unmark_root(root)
        sys.path.remove(root)
        for name in set(sys.modules) - set(saved):
            del sys.modules[name]
        sys.modules.update(saved)


def test_their_proposal_layer_gives_caffe_fast_rcnns_outputs(lib, tmp_path):
    """The recorded fork golden (tests/frcnn/test_faster_rcnn_test_net.py), with their layer
    in place of our stand-in: rois, class probabilities and box deltas agree."""
    shutil.copy(GOLDEN / "net.prototxt", tmp_path / "net.prototxt")
    net = caffe.Net(str(tmp_path / "net.prototxt"), str(GOLDEN / "weights.caffemodel"),
                    caffe.TEST)
    assert Path(sys.modules["rpn.proposal_layer"].__file__).is_relative_to(CHECKOUT)
    assert_equals_recorded_golden(net)


def random_test_net(model):
    path = Path(CHECKOUT) / "models" / "pascal_voc" / model / "faster_rcnn_end2end" / \
        "test.prototxt"
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.default_rng(0)
    for params in net.params.values():
        params[0].data[...] = rng.normal(0, 0.01, params[0].data.shape)
    return net


@pytest.mark.parametrize("model", ["ZF", "VGG16"])
def test_their_test_prototxts_run(lib, model):
    """models/pascal_voc/*/faster_rcnn_end2end/test.prototxt as published, random weights."""
    net = random_test_net(model)
    rng = np.random.default_rng(1)
    net.blobs["data"].reshape(1, 3, 224, 320)
    out = net.forward(data=rng.normal(size=(1, 3, 224, 320)).astype(np.float32),
                      im_info=np.array([[224, 320, 1.0]], np.float32))
    rois = net.blobs["rois"].data
    assert 0 < len(rois) <= lib.TEST.RPN_POST_NMS_TOP_N
    assert out["cls_prob"].shape == (len(rois), 21) and out["bbox_pred"].shape == (len(rois), 84)
    assert (rois[:, 1:] >= 0).all() and (rois[:, [1, 3]] <= 319).all()


def test_their_im_detect_runs_on_our_net(lib):
    """Their user code too: fast_rcnn.test.im_detect (tools/demo.py's call) and their nms."""
    cfg = lib
    cfg.TEST.update(HAS_RPN=True, SCALES=(200,), MAX_SIZE=300)
    from fast_rcnn.nms_wrapper import nms
    from fast_rcnn.test import im_detect
    net = random_test_net("ZF")
    image = np.random.default_rng(2).integers(0, 255, (150, 220, 3)).astype(np.uint8)
    scores, boxes = im_detect(net, image)
    assert scores.shape[1] == 21 and boxes.shape == (len(scores), 84)
    assert (boxes[:, 0::4] >= 0).all() and (boxes[:, 2::4] <= 219).all()
    dets = np.hstack([boxes[:, 4:8], scores[:, 1:2]]).astype(np.float32)
    keep = nms(dets, 0.3)
    assert 0 < len(keep) <= len(dets)


def synthetic_roidb(folder, count=4, size=(160, 200), seed=0):
    """Images with filled rectangles of classes 1-3, as py-faster-rcnn's roidb entries."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(seed)
    roidb = []
    for k in range(count):
        height, width = size
        image = rng.integers(0, 60, (height, width, 3)).astype(np.uint8)
        boxes, classes = [], []
        for _ in range(2):
            w, h = rng.integers(40, 90, 2)
            x1, y1 = rng.integers(0, width - w), rng.integers(0, height - h)
            cls = int(rng.integers(1, 4))
            image[y1:y1 + h, x1:x1 + w] = (80 * cls, 255 - 60 * cls, 40 * cls)
            boxes.append([x1, y1, x1 + w - 1, y1 + h - 1])
            classes.append(cls)
        path = str(folder / f"{k}.png")
        cv2.imwrite(path, image)
        roidb.append({"image": path, "width": width, "height": height, "flipped": False,
                      "boxes": np.array(boxes, np.uint16),
                      "gt_classes": np.array(classes, np.int32)})
    return roidb


def test_their_end2end_train_net_takes_solver_steps(lib, tmp_path):
    """ZF faster_rcnn_end2end/train.prototxt with their roi_data, anchor target, proposal and
    proposal target layers (the settings of experiments/cfgs/faster_rcnn_end2end.yml, images
    scaled to 160 pixels): the loss falls and the snapshot resumes."""
    cfg = lib
    cfg.TRAIN.update(HAS_RPN=True, IMS_PER_BATCH=1, BBOX_NORMALIZE_TARGETS_PRECOMPUTED=True,
                     RPN_POSITIVE_OVERLAP=0.7, RPN_BATCHSIZE=256, PROPOSAL_METHOD="gt",
                     BG_THRESH_LO=0.0, SCALES=(160,), MAX_SIZE=240, USE_FLIPPED=False)
    cfg.RNG_SEED = 3
    np.random.seed(cfg.RNG_SEED)
    caffe.set_random_seed(cfg.RNG_SEED)
    net = Path(CHECKOUT) / "models" / "pascal_voc" / "ZF" / "faster_rcnn_end2end" / \
        "train.prototxt"
    (tmp_path / "solver.prototxt").write_text(
        f'train_net: "{net}"\nbase_lr: 0.001\nlr_policy: "fixed"\nmomentum: 0.9\n'
        f'weight_decay: 0.0005\ndisplay: 0\nsnapshot_prefix: "{tmp_path}/zf"\n')
    solver = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    rng = np.random.default_rng(1)
    for params in solver.net.params.values():   # the ImageNet weights are not at hand
        if not params[0].data.any():
            params[0].data[...] = rng.normal(0, 0.01, params[0].data.shape)
    roidb = synthetic_roidb(tmp_path)
    solver.net.layers[0].set_roidb(roidb)
    losses = ("rpn_cls_loss", "rpn_loss_bbox", "cls_loss", "bbox_loss")

    def total():
        return sum(float(solver.net.blobs[name].data) for name in losses)
    first = []
    for _ in range(len(roidb)):
        solver.step(1)
        first.append(total())
    solver.step(40)
    last = []
    for _ in range(len(roidb)):
        solver.step(1)
        last.append(total())
    print("losses first", np.round(first, 3), "last", np.round(last, 3))
    assert np.mean(last) < 0.8 * np.mean(first), (first, last)
    assert solver.iter == 48
    solver.snapshot()
    resumed = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    resumed.restore(str(tmp_path / "zf_iter_48.solverstate"))
    resumed.net.layers[0].set_roidb(roidb)
    assert resumed.iter == 48
    for name, params in solver.net.params.items():
        np.testing.assert_array_equal(resumed.net.params[name][0].data, params[0].data)
    resumed.step(1)
    assert resumed.iter == 49 and np.isfinite(float(resumed.net.blobs["cls_loss"].data))
