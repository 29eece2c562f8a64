"""A region proposal layer written to py-faster-rcnn's Python-layer interface (ours, for tests).

py-faster-rcnn's own `lib/rpn/proposal_layer.py` is Python 2 and needs its Cython NMS, so the
tests run this stand-in. It uses the same module and class names (`rpn.proposal_layer`,
`ProposalLayer`), reads `self.param_str_` as YAML ("'feat_stride': 16"), indexes its settings by
`str(self.phase)`, and reshapes its top to the number of proposals on every forward, as theirs
does. The algorithm is the paper's: 9 anchors per cell (ratios 0.5, 1, 2; scales 8, 16, 32 of
a 16-pixel base), the predicted deltas applied, boxes clipped to the image, those under
RPN_MIN_SIZE x scale dropped, the best PRE_NMS_TOP_N by score, NMS at NMS_THRESH, then
POST_NMS_TOP_N, as rows (0, x1, y1, x2, y2).
"""
import numpy as np
import yaml

import caffe

CFG = {"TRAIN": dict(PRE_NMS_TOP_N=12000, POST_NMS_TOP_N=2000, NMS_THRESH=0.7, MIN_SIZE=16),
       "TEST": dict(PRE_NMS_TOP_N=6000, POST_NMS_TOP_N=300, NMS_THRESH=0.7, MIN_SIZE=16)}


def anchors(base=16, ratios=(0.5, 1, 2), scales=(8, 16, 32)):
    ctr = (base - 1) / 2
    out = []
    for r in ratios:
        w = np.round(np.sqrt(base * base / r))
        h = np.round(w * r)
        for s in scales:
            ws, hs = w * s, h * s
            out.append([ctr - (ws - 1) / 2, ctr - (hs - 1) / 2, ctr + (ws - 1) / 2,
                        ctr + (hs - 1) / 2])
    return np.array(out)


def apply_deltas(boxes, deltas):
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    cx, cy = boxes[:, 0] + 0.5 * w, boxes[:, 1] + 0.5 * h
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw, ph = np.exp(deltas[:, 2]) * w, np.exp(deltas[:, 3]) * h
    return np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], 1)


def nms(boxes, scores, thresh):
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order, keep = scores.argsort()[::-1], []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) -
                       np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) -
                       np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        overlap = w * h / (area[i] + area[rest] - w * h)
        order = rest[overlap <= thresh]
    return np.array(keep, dtype=int)


class ProposalLayer(caffe.Layer):
    def setup(self, bottom, top):
        self._feat_stride = yaml.safe_load(self.param_str_)["feat_stride"]
        self._anchors = anchors()
        top[0].reshape(1, 5)

    def reshape(self, bottom, top):
        pass                            # the top's size is known only after forward

    def forward(self, bottom, top):
        cfg = CFG[str(self.phase)]
        a = len(self._anchors)
        scores = bottom[0].data[0, a:]          # foreground probabilities, A x H x W
        deltas = bottom[1].data[0]              # 4A x H x W
        im_h, im_w, im_scale = bottom[2].data[0, :3]
        height, width = scores.shape[-2:]
        sx, sy = np.meshgrid(np.arange(width) * self._feat_stride,
                             np.arange(height) * self._feat_stride)
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], 1)
        boxes = (self._anchors[None] + shifts[:, None]).reshape(-1, 4)     # cell-major
        deltas = deltas.transpose(1, 2, 0).reshape(-1, 4)
        scores = scores.transpose(1, 2, 0).reshape(-1)
        boxes = apply_deltas(boxes, deltas)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, im_w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, im_h - 1)
        size = cfg["MIN_SIZE"] * im_scale
        keep = np.where((boxes[:, 2] - boxes[:, 0] + 1 >= size) &
                        (boxes[:, 3] - boxes[:, 1] + 1 >= size))[0]
        boxes, scores = boxes[keep], scores[keep]
        order = scores.argsort()[::-1][:cfg["PRE_NMS_TOP_N"]]
        boxes, scores = boxes[order], scores[order]
        keep = nms(boxes, scores, cfg["NMS_THRESH"])[:cfg["POST_NMS_TOP_N"]]
        rois = np.hstack([np.zeros((len(keep), 1)), boxes[keep]]).astype(np.float32)
        top[0].reshape(*rois.shape)
        top[0].data[...] = rois

    def backward(self, top, propagate_down, bottom):
        pass
