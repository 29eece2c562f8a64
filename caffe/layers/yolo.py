"""eric612/MobileNet-YOLO's YOLO v3 detection output, forward only as in the fork."""
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
        boxes, labels, scores = (torch.cat(c) for c in zip(*parts))
        # The fork's std::sort leaves ties in no set order; a stable sort keeps scale order.
        order = torch.sort(scores, descending=True, stable=True).indices
        boxes, labels, scores = boxes[order], labels[order], scores[order]
        alive = torch.ones(len(scores), dtype=torch.bool, device=scores.device)
        for i in range(len(scores)):
            if alive[i]:
                later = alive[i + 1:]
                later &= center_iou(boxes[i], boxes[i + 1:]) < p.nms_threshold
        boxes, labels, scores = boxes[alive], labels[alive], scores[alive]
        if not len(scores):
            num = bottom[-1].shape[0]
            top[0].reshape((1, 1, num, 7))
            top[0].data.fill_(-1)
            top[0].data[0, 0, :, 0] = torch.arange(num)
            return
        half = boxes[:, 2:] / 2
        rows = torch.cat([torch.zeros_like(scores)[:, None], labels[:, None] + 1.0,
                          scores[:, None], boxes[:, :2] - half, boxes[:, :2] + half], 1)
        top[0].reshape((1, 1, len(rows), 7))
        top[0].data[0, 0] = rows
