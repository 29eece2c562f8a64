"""eric612/MobileNet-YOLO's YOLO v2 and v3 detection outputs, forward only as in the fork."""
import torch

from ..layer import Layer, register_layer


def center_iou(a, b):
    """IoU of (x, y, w, h) box a with each row of b, as the fork's box_iou computes it."""
    def overlap(i):
        lo = torch.maximum(a[i] - a[i + 2] / 2, b[:, i] - b[:, i + 2] / 2)
        hi = torch.minimum(a[i] + a[i + 2] / 2, b[:, i] + b[:, i + 2] / 2)
        return hi - lo
    w, h = overlap(0), overlap(1)
    inter = torch.where((w < 0) | (h < 0), 0, w * h)
    return inter / (a[2] * a[3] + b[:, 2] * b[:, 3] - inter)


@register_layer
class Yolov3DetectionOutputLayer(Layer):
    """Boxes of every bottom (one per scale, num_box anchors of 4 + 1 + num_classes channels):
    x = (col + s(tx)) / W, y = (row + s(ty)) / H, w = e^tw anchor_w / (W anchors_scale),
    h likewise, score = s(t_obj) s(t_class) for each class above confidence_threshold; sorted
    by score, then NMS over all classes together (IoU >= nms_threshold). top: (1, 1, D, 7)
    rows (0, class + 1, score, xmin, ymin, xmax, ymax), or per image (n, -1, ...) if none."""

    type = "Yolov3DetectionOutput"
    min_bottom_blobs = 1
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.yolov3_detection_output_param
        if p.gaussian_box:
            self.fail("gaussian_box (Gaussian YOLO v3) is not implemented")
        if len(bottom) != p.mask_group_num or len(p.anchors_scale) < len(bottom):
            self.fail(f"needs mask_group_num ({p.mask_group_num}) bottoms and an anchors_scale "
                      f"for each, got {len(bottom)} and {len(p.anchors_scale)}")
        group = len(p.mask) // p.mask_group_num
        if group < p.num_box or 2 * (max(p.mask, default=0) + 1) > len(p.biases):
            self.fail(f"mask ({list(p.mask)}) must name num_box ({p.num_box}) anchors per "
                      f"bottom among the {len(p.biases) // 2} in biases")
        self.anchors = torch.tensor(list(p.biases), dtype=torch.float64).view(-1, 2)
        self.masks = [list(p.mask[t * group:t * group + p.num_box]) for t in range(len(bottom))]

    def reshape(self, bottom, top):
        p = self.param.yolov3_detection_output_param
        for b in bottom:
            if b.num_axes != 4 or b.shape[1] != p.num_box * (5 + p.num_classes):
                self.fail(f"bottom {tuple(b.shape)} must be N x num_box ({p.num_box}) * (5 + "
                          f"num_classes ({p.num_classes})) x H x W")
        top[0].reshape((1, 1, 1, 7))

    def _candidates(self, t, x):
        p, (n, _, h, w) = self.param.yolov3_detection_output_param, x.shape
        v = x.view(n, p.num_box, 5 + p.num_classes, h, w).permute(0, 3, 4, 1, 2)  # b, row, col
        rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1, 1)
        cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w, 1)
        anchors = self.anchors[self.masks[t]].to(x)
        scale = p.anchors_scale[t]
        boxes = torch.stack([(cols + torch.sigmoid(v[..., 0])) / w,
                             (rows + torch.sigmoid(v[..., 1])) / h,
                             torch.exp(v[..., 2]) * anchors[:, 0] / (w * scale),
                             torch.exp(v[..., 3]) * anchors[:, 1] / (h * scale)], -1)
        scores = torch.sigmoid(v[..., 5:]) * torch.sigmoid(v[..., 4:5])
        keep = scores > p.confidence_threshold        # the fork's order: b, cell, anchor, class
        index = keep.nonzero()
        return boxes[tuple(index[:, :4].T)], index[:, 4], scores[keep]

    def forward(self, bottom, top):
        p = self.param.yolov3_detection_output_param
        parts = [self._candidates(t, b.data) for t, b in enumerate(bottom)]
        write_detections(top[0], *(torch.cat(c) for c in zip(*parts)), p.nms_threshold,
                         bottom[-1].shape[0])


def write_detections(top, boxes, labels, scores, nms_threshold, num):
    """The forks' output: sorted by score, NMS over all classes (IoU >= nms_threshold drops
    the later box), rows (0, label + 1, score, xmin, ymin, xmax, ymax); with none, one row
    (n, -1, ..., -1) per image of the last bottom."""
    # The fork's std::sort leaves ties in no set order; a stable sort keeps the input order.
    order = torch.sort(scores, descending=True, stable=True).indices
    boxes, labels, scores = boxes[order], labels[order], scores[order]
    alive = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
    for i in range(len(scores)):
        if alive[i]:
            later = alive[i + 1:]
            later &= center_iou(boxes[i], boxes[i + 1:]) < nms_threshold
    boxes, labels, scores = boxes[alive], labels[alive], scores[alive]
    if not len(scores):
        top.reshape((1, 1, num, 7))
        top.data.fill_(-1)
        top.data[0, 0, :, 0] = torch.arange(num)
        return
    half = boxes[:, 2:] / 2
    rows = torch.cat([torch.zeros_like(scores)[:, None], labels[:, None] + 1.0,
                      scores[:, None], boxes[:, :2] - half, boxes[:, :2] + half], 1)
    top.reshape((1, 1, len(rows), 7))
    top.data[0, 0] = rows


@register_layer
class YoloDetectionOutputLayer(Layer):
    """YOLO v2 boxes of one or two square bottoms (num_box anchors of 4 + 1 + num_classes
    channels): x = (col + s(tx)) / S, y = (row + s(ty)) / S, w = e^tw anchor_w / S, h
    likewise; each box keeps its best class, score = s(t_obj) max softmax(classes), if at
    least confidence_threshold; then as Yolov3DetectionOutput (sort, NMS, rows)."""

    type = "YoloDetectionOutput"
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.yolo_detection_output_param
        if not p.HasField("num_classes"):
            self.fail("must specify num_classes")
        if p.coords != 4:
            self.fail(f"coords must be 4 (the fork reads the objectness at channel 4), got "
                      f"{p.coords}")
        if len(p.biases) < 2 * p.num_box:
            self.fail(f"biases must hold num_box ({p.num_box}) anchor pairs")
        self.anchors = torch.tensor(list(p.biases), dtype=torch.float64).view(-1, 2)[:p.num_box]

    def reshape(self, bottom, top):
        p = self.param.yolo_detection_output_param
        for b in bottom:
            if b.num_axes != 4 or b.shape[2] != b.shape[3] or \
                    b.shape[1] != p.num_box * (p.coords + 1 + p.num_classes):
                self.fail(f"bottom {tuple(b.shape)} must be N x num_box ({p.num_box}) * (coords "
                          f"+ 1 + num_classes ({p.num_classes})) x S x S")
        top[0].reshape((1, 1, 1, 7))

    def _candidates(self, x):
        p, (n, _, side, _) = self.param.yolo_detection_output_param, x.shape
        v = x.view(n, p.num_box, -1, side, side).permute(0, 3, 4, 1, 2)   # b, row, col, anchor
        rows = torch.arange(side, dtype=x.dtype, device=x.device).view(1, side, 1, 1)
        cols = torch.arange(side, dtype=x.dtype, device=x.device).view(1, 1, side, 1)
        anchors = self.anchors.to(x)
        boxes = torch.stack([(cols + torch.sigmoid(v[..., 0])) / side,
                             (rows + torch.sigmoid(v[..., 1])) / side,
                             torch.exp(v[..., 2]) * anchors[:, 0] / side,
                             torch.exp(v[..., 3]) * anchors[:, 1] / side], -1)
        probs = torch.softmax(v[..., 5:5 + p.num_classes], -1)
        best, labels = probs.max(-1)          # the first of equal maxima, as the fork's loop
        scores = best * torch.sigmoid(v[..., 4])
        keep = scores >= p.confidence_threshold
        return boxes[keep], labels[keep], scores[keep]

    def forward(self, bottom, top):
        parts = [self._candidates(b.data) for b in bottom]
        write_detections(top[0], *(torch.cat(c) for c in zip(*parts)),
                         self.param.yolo_detection_output_param.nms_threshold,
                         bottom[-1].shape[0])
