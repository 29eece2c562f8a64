"""Record a whole Faster R-CNN test net (tests/frcnn) as caffe-fast-rcnn's own pycaffe runs it.

    PYTHONPATH=/opt/frcnn/src/python:tests/frcnn python tests/golden_forks/record_frcnn_net.py

The net is tests/frcnn's ZF-shaped test net with its Python proposal layer (the stand-in of
py-faster-rcnn's interface, which runs in both pycaffes). Its random weights are drawn by the
fork's fillers and saved by the fork; two images of two sizes give two numbers of proposals.
Writes tests/golden_forks/models/frcnn_zf_test/{net.prototxt, weights.caffemodel, golden.npz}
with in/<case>/{data, im_info} and out/<case>/{rois, cls_prob, bbox_pred}. This file imports
only NumPy, the fork's caffe and the test net's text; it needs the fork built (not part of
this project).
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
import caffe  # noqa: E402  (the fork's, first on PYTHONPATH)

sys.path.insert(0, str(HERE.parent / "frcnn"))      # zf_net and the rpn package
from zf_net import SIZES, zf_like  # noqa: E402

OUT = HERE / "models" / "frcnn_zf_test"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "net.prototxt").write_text(zf_like(*SIZES[0]))
    caffe.set_mode_cpu()
    caffe.set_random_seed(11) if hasattr(caffe, "set_random_seed") else None
    net = caffe.Net(str(OUT / "net.prototxt"), caffe.TEST)
    net.save(str(OUT / "weights.caffemodel"))
    rng = np.random.RandomState(7)
    arrays = {}
    for k, (h, w) in enumerate(SIZES):
        data = rng.uniform(-1, 1, (1, 3, h, w)).astype(np.float32)
        info = np.array([[h, w, 1.0]], np.float32)
        net.blobs["data"].reshape(1, 3, h, w)
        net.blobs["im_info"].reshape(1, 3)
        net.blobs["data"].data[...] = data
        net.blobs["im_info"].data[...] = info
        net.forward()
        arrays[f"in/{k}/data"], arrays[f"in/{k}/im_info"] = data, info
        for name in ("rois", "cls_prob", "bbox_pred"):
            arrays[f"out/{k}/{name}"] = net.blobs[name].data.copy()
        scores = np.sort(net.blobs["rpn_cls_prob_reshape"].data[0, 9:].ravel())[::-1][:400]
        print(f"image {k} ({h}x{w}): {len(arrays[f'out/{k}/rois'])} proposals; smallest gap "
              f"between the top scores {np.diff(scores).__abs__().min():.2e}")
    np.savez_compressed(OUT / "golden.npz", **arrays)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
