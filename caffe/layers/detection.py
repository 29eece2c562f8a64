"""The forks' box layers: SSD's PriorBox, DetectionOutput, DetectionEvaluate (weiliu89/caffe,
branch ssd) and Faster R-CNN's ROIPooling (rbgirshick/caffe-fast-rcnn).

Boxes are (xmin, ymin, xmax, ymax); SSD's are normalised to [0, 1] by the image size.
"""
import math

import torch

from ..layer import Layer, register_layer
from ..net_dialects import facebox_density, prior_ratios
from . import bbox_util


def c_round(x):
    """C's round(): halves away from zero (torch.round rounds them to even)."""
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


@register_layer
class PriorBoxLayer(Layer):
    """Default boxes of an SSD head: at the centre ((w + offset) step_w, (h + offset) step_h)
    of every cell of bottom[0], boxes of side min_size, sqrt(min_size max_size) and
    min_size (sqrt(r), 1 / sqrt(r)) for each aspect ratio r, over the image size (bottom[1],
    unless img_size/img_h/img_w say). top: (1, 2, H W P 4), boxes then their variances.
    dialect "textboxes" adds each box again half a step lower, "faceboxes" tiles the 32 and
    64 pixel boxes 4 x 4 and 2 x 2 per cell (caffe/net_dialects.py)."""

    type = "PriorBox"
    dialects = ("textboxes", "faceboxes")
    min_bottom_blobs = 1
    max_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p, dialect = self.param.prior_box_param, self.param.dialect
        if not len(p.min_size) or min(p.min_size) <= 0:
            self.fail("must provide positive min_size values")
        ratios = prior_ratios(p)
        if len(p.max_size) and len(p.max_size) != len(p.min_size):
            self.fail(f"needs one max_size per min_size, got {len(p.max_size)} and "
                      f"{len(p.min_size)}")
        # Rows (width, height, x and y shift in pixels, y shift in steps). SSD and FaceBoxes
        # truncate the sizes to int before they use them; TextBoxes keeps floats.
        size = (lambda s: s) if dialect == "textboxes" else int
        sizes = []
        for k, smin in enumerate(size(s) for s in p.min_size):
            if dialect == "faceboxes":   # a grid of boxes one pixel smaller, per density
                n, shift = facebox_density(smin)
                grid = range(-(n // 2), n - n // 2)
                sizes += [(smin - 1, smin - 1, j * shift, i * shift, 0) for i in grid for j in grid]
            else:
                sizes.append((smin, smin, 0, 0, 0))
            if len(p.max_size):
                if p.max_size[k] <= p.min_size[k]:
                    self.fail("max_size must be greater than min_size")
                side = math.sqrt(smin * size(p.max_size[k]))
                sizes.append((side, side, 0, 0, 0))
            sizes += [(smin * math.sqrt(r), smin / math.sqrt(r), 0, 0, 0) for r in ratios[1:]
                      if abs(r - 1.0) >= 1e-6]
        if dialect == "textboxes":   # each prior, then its copy half a step lower
            sizes = [row for s in sizes for row in (s, s[:4] + (0.5,))]
        # TextBoxes' schema defaults clip to true.
        self.clip = p.clip if p.HasField("clip") else dialect == "textboxes"
        self.sizes = torch.tensor(sizes, dtype=torch.float64)
        var = list(p.variance) or [0.1]
        if len(var) not in (1, 4) or min(var) <= 0:
            self.fail(f"variance must be one or four positive values, got {var}")
        self.variance = var * 4 if len(var) == 1 else var
        if (p.HasField("img_h") or p.HasField("img_w")) and p.HasField("img_size"):
            self.fail("give img_size or img_h/img_w, not both")
        if (p.HasField("step_h") or p.HasField("step_w")) and p.HasField("step"):
            self.fail("give step or step_h/step_w, not both")
        self.img = (p.img_h, p.img_w) if p.HasField("img_h") or p.HasField("img_w") else \
            (p.img_size, p.img_size)
        self.step = (p.step_h, p.step_w) if p.HasField("step_h") or p.HasField("step_w") \
            else (p.step, p.step)
        if len(bottom) < 2 and 0 in self.img:
            self.fail("needs the image as bottom[1] unless img_size or img_h/img_w is set")

    def reshape(self, bottom, top):
        top[0].reshape((1, 2, bottom[0].height * bottom[0].width * len(self.sizes) * 4))

    def forward(self, bottom, top):
        p, (fh, fw) = self.param.prior_box_param, (bottom[0].height, bottom[0].width)
        ih, iw = self.img if 0 not in self.img else (bottom[1].height, bottom[1].width)
        sh, sw = self.step if 0 not in self.step else (ih / fh, iw / fw)
        cy = (torch.arange(fh, dtype=torch.float64) + p.offset) * sh
        cx = (torch.arange(fw, dtype=torch.float64) + p.offset) * sw
        cy, cx = cy.view(fh, 1, 1).expand(fh, fw, 1), cx.view(1, fw, 1).expand(fh, fw, 1)
        w, h = self.sizes[:, 0] / 2, self.sizes[:, 1] / 2
        cx, cy = cx + self.sizes[:, 2], cy + self.sizes[:, 3] + self.sizes[:, 4] * sh
        boxes = torch.stack([(cx - w) / iw, (cy - h) / ih, (cx + w) / iw, (cy + h) / ih], -1)
        if self.clip:
            boxes = boxes.clamp(0, 1)
        out = top[0].data.view(2, -1, 4)
        out[0] = boxes.reshape(-1, 4)
        out[1] = torch.tensor(self.variance, dtype=out.dtype)


@register_layer
class DetectionOutputLayer(Layer):
    """SSD's detections: decode bottom[0]'s offsets against the priors (bottom[2]), keep per
    class the boxes whose confidence (bottom[1]) passes confidence_threshold, then non-maximum
    suppression (nms_param: nms_threshold, top_k, eta), then the keep_top_k best of the image.
    top: (1, 1, D, 7) rows (image, label, score, xmin, ymin, xmax, ymax), by image, then
    label, then score; an image without detections gives no row, and when none has any the
    top holds one row (image, -1, ..., -1) per image."""

    type = "DetectionOutput"
    min_bottom_blobs = 3
    max_bottom_blobs = 4
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.detection_output_param
        if not p.HasField("num_classes"):
            self.fail("must specify num_classes")
        if p.nms_param.nms_threshold < 0 or not 0 < p.nms_param.eta <= 1:
            self.fail("nms_threshold must be non-negative and eta in (0, 1]")
        self.loc_classes = 1 if p.share_location else p.num_classes
        self.threshold = p.confidence_threshold if p.HasField("confidence_threshold") else None
        self.top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") else -1

    def reshape(self, bottom, top):
        p = self.param.detection_output_param
        self.num_priors = bottom[2].height // 4
        if self.num_priors * self.loc_classes * 4 != bottom[0].count(1):
            self.fail(f"{bottom[0].count(1)} location values do not fit {self.num_priors} "
                      f"priors x {self.loc_classes} classes x 4")
        if self.num_priors * p.num_classes != bottom[1].count(1):
            self.fail(f"{bottom[1].count(1)} confidences do not fit {self.num_priors} priors "
                      f"x {p.num_classes} classes")
        top[0].reshape((1, 1, 1, 7))

    def forward(self, bottom, top):
        p, n = self.param.detection_output_param, bottom[0].num
        prior = bottom[2].data.reshape(2, -1, 4)
        loc = bottom[0].data.reshape(n, self.num_priors, self.loc_classes, 4)
        conf = bottom[1].data.reshape(n, self.num_priors, p.num_classes)
        boxes = bbox_util.decode(prior[0][:, None], prior[1][:, None], loc, p.code_type,
                                 p.variance_encoded_in_target)
        rows = []
        for i in range(n):
            found = []          # (score, label, prior index)
            for c in range(p.num_classes):
                if c == p.background_label_id:
                    continue
                b = boxes[i, :, 0 if p.share_location else c]
                for k in bbox_util.nms(b, conf[i, :, c], self.threshold,
                                       p.nms_param.nms_threshold, p.nms_param.eta, self.top_k):
                    found.append((float(conf[i, k, c]), c, k))
            if -1 < p.keep_top_k < len(found):
                found = sorted(found, key=lambda f: -f[0])[:p.keep_top_k]
                found.sort(key=lambda f: f[1])     # stable: by label, then by score
            for score, c, k in found:
                b = boxes[i, k, 0 if p.share_location else c]
                rows.append(torch.cat([b.new_tensor([i, c, score]), b]))
        if not rows:
            rows = [bottom[0].data.new_tensor([i] + [-1] * 6) for i in range(n)]
        out = torch.stack(rows)
        top[0].reshape((1, 1, out.shape[0], 7))
        top[0].data[...] = out.view(top[0].shape)


@register_layer
class DetectionEvaluateLayer(Layer):
    """SSD's evaluation rows for mean average precision: from detections (bottom[0], rows of
    DetectionOutput) and ground truth (bottom[1], rows (image, label, instance, xmin, ymin,
    xmax, ymax, difficult)). top: (1, 1, C + D, 5); first per class (-1, label, number of
    positives, -1, -1), then per detection (image, label, score, true positive, false
    positive), by image, label and descending score. A detection is a true positive when
    it overlaps an unclaimed ground-truth box of its class by overlap_threshold."""

    type = "DetectionEvaluate"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.detection_evaluate_param
        if not p.HasField("num_classes"):
            self.fail("must provide num_classes")
        if p.overlap_threshold <= 0:
            self.fail("overlap_threshold must be positive")
        self.sizes = []
        if p.HasField("name_size_file"):
            with open(p.name_size_file) as f:
                words = f.read().split()
            self.sizes = [(int(words[k + 1]), int(words[k + 2])) for k in range(0, len(words), 3)]
        if p.HasField("resize_param") and p.resize_param.resize_mode != p.resize_param.WARP:
            self.fail("only resize_mode WARP is supported for name_size_file scaling")
        self.count = 0

    def reshape(self, bottom, top):
        p = self.param.detection_evaluate_param
        if bottom[0].shape[-1] != 7 or bottom[1].shape[-1] != 8:
            self.fail(f"needs rows of 7 detection and 8 ground-truth values, got shapes "
                      f"{bottom[0].shape} and {bottom[1].shape}")
        classes = p.num_classes - (p.background_label_id != -1)
        valid = int((bottom[0].data.reshape(-1, 7)[:, 1] != -1).sum())
        top[0].reshape((1, 1, classes + valid, 5))

    def _scaled(self, boxes):
        if not self.sizes:
            return boxes
        h, w = self.sizes[self.count]
        return boxes.clamp(0, 1) * boxes.new_tensor([w, h, w, h])

    def forward(self, bottom, top):
        p = self.param.detection_evaluate_param
        det = bottom[0].data.reshape(-1, 7)
        gt = bbox_util.ground_truth(bottom[1].data, p.background_label_id, True)
        rows = []
        for c in range(p.num_classes):
            if c != p.background_label_id:
                positives = sum(int(((lab == c) & (p.evaluate_difficult_gt | ~hard)).sum())
                                for _, lab, hard in gt.values())
                rows.append([-1, c, positives, -1, -1])
        det = det[det[:, 0] != -1]
        for image in sorted(set(int(v) for v in det[:, 0].long().tolist())):
            mine = det[det[:, 0].long() == image]
            for c in sorted(set(int(v) for v in mine[:, 1].long().tolist())):
                d = mine[mine[:, 1].long() == c]
                boxes, labels, hard = gt.get(image, (d[:0, 3:7], d[:0, 1].long(), None))
                truth = labels == c
                if not bool(truth.any()):
                    rows += [[image, c, float(s), 0, 1] for s in d[:, 2]]
                    continue
                d = d[torch.sort(d[:, 2], descending=True, stable=True).indices]
                iou = bbox_util.jaccard(self._scaled(d[:, 3:7]), self._scaled(boxes[truth]),
                                        normalized=not self.sizes)
                hard, claimed = hard[truth], set()
                for k in range(d.shape[0]):
                    best, j = (float(v) for v in iou[k].max(0))
                    j = int(j)
                    if best < p.overlap_threshold:
                        rows.append([image, c, float(d[k, 2]), 0, 1])
                    elif not p.evaluate_difficult_gt and bool(hard[j]):
                        rows.append([image, c, float(d[k, 2]), 0, 0])   # neither
                    else:
                        rows.append([image, c, float(d[k, 2]), int(j not in claimed),
                                     int(j in claimed)])
                        claimed.add(j)
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        top[0].data[...] = torch.tensor(rows, dtype=top[0].dtype).view(top[0].shape)


@register_layer
class ROIPoolingLayer(Layer):
    """Fast R-CNN's max pooling of regions: for every ROI (bottom[1] rows (item, x1, y1, x2,
    y2) in image pixels, times spatial_scale, rounded) of bottom[0], the maximum over each
    of pooled_h x pooled_w bins; an empty bin gives 0. Backward routes each top diff to the
    bottom element that gave its maximum."""

    type = "ROIPooling"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.roi_pooling_param
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            self.fail("pooled_h and pooled_w must be > 0")

    def reshape(self, bottom, top):
        p = self.param.roi_pooling_param
        top[0].reshape((bottom[1].num, bottom[0].channels, p.pooled_h, p.pooled_w))

    def _bins(self, start, size, pooled, limit):
        """(pooled, limit) masks of the feature rows (or columns) in each bin."""
        dtype = self.dtype
        bin_size = torch.tensor(size, dtype=dtype) / pooled
        k = torch.arange(pooled, dtype=dtype)
        lo = (torch.floor(k * bin_size).long() + start).clamp(0, limit)
        hi = (torch.ceil((k + 1) * bin_size).long() + start).clamp(0, limit)
        pos = torch.arange(limit)
        return (pos >= lo[:, None]) & (pos < hi[:, None])

    def forward(self, bottom, top):
        p, x = self.param.roi_pooling_param, bottom[0].data
        n, c, height, width = x.shape
        rois = bottom[1].data.reshape(-1, 5).cpu()
        corners = c_round(rois[:, 1:] * torch.tensor(p.spatial_scale, dtype=rois.dtype)).long()
        out = top[0].data.view(-1, c, p.pooled_h, p.pooled_w)
        self.argmax = torch.full(out.shape, -1, dtype=torch.long, device=x.device)
        for r in range(rois.shape[0]):
            item = int(rois[r, 0])
            if not 0 <= item < n:
                self.fail(f"ROI {r} names batch item {item}, the batch has {n}")
            x1, y1, x2, y2 = corners[r].tolist()
            rows = self._bins(y1, max(y2 - y1 + 1, 1), p.pooled_h, height).to(x.device)
            cols = self._bins(x1, max(x2 - x1 + 1, 1), p.pooled_w, width).to(x.device)
            # Max over the columns of each bin, then over its rows; argmax keeps the first
            # maximum in (row, column) order, as the fork's scan does.
            wide = torch.where(cols, x[item][:, :, None, :], -math.inf)   # C, H, PW, W
            best_w, arg_w = wide.max(-1)
            tall = torch.where(rows[:, :, None], best_w[:, None], -math.inf)  # C, PH, H, PW
            best, arg_h = tall.max(2)
            empty = ~(rows.any(1)[:, None] & cols.any(1)[None, :])
            out[r] = torch.where(empty, torch.zeros_like(best), best)
            flat = arg_h * width + arg_w.gather(1, arg_h)
            self.argmax[r] = torch.where(empty, torch.full_like(flat, -1), flat)
        self.items = rois[:, 0].long().to(x.device)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        n, c, h, w = bottom[0].shape
        bottom[0].diff.zero_()
        base = (self.items.view(-1, 1, 1, 1) * c + torch.arange(c, device=self.items.device)
                .view(1, -1, 1, 1)) * (h * w)
        valid = self.argmax >= 0
        index = (base + self.argmax)[valid]
        bottom[0].diff.view(-1).index_add_(0, index, top[0].diff.reshape(self.argmax.shape)[valid])
