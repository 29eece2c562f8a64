"""Region layers of the two-stage detectors that OpenCV's Caffe importer runs: R-FCN's
position-sensitive PSROIPooling (daijifeng001/caffe-rfcn) and OpenCV dnn's Proposal, the C++
stand-in for py-faster-rcnn's Python proposal layer in the Faster R-CNN / R-FCN prototxts
published for OpenCV.
"""
import torch

from ..layer import Layer, register_layer
from . import bbox_util
from .detection import c_round


def _box_sums(integral, items, channels, h0, h1, w0, w1):
    """Sums of the feature windows [h0, h1) x [w0, w1) read off an integral image (N, C, H+1,
    W+1); all index tensors broadcast to the result's shape."""
    return (integral[items, channels, h1, w1] - integral[items, channels, h0, w1]
            - integral[items, channels, h1, w0] + integral[items, channels, h0, w0])


@register_layer
class PSROIPoolingLayer(Layer):
    """top[r, d, i, j] = mean of bottom[item_r, (d G + i) G + j] over bin (i, j) of ROI r, a
    G x G grid (G = group_size) on the ROI (rows (item, x1, y1, x2, y2), rounded, x2 + 1,
    times spatial_scale); an empty bin gives 0. Backward spreads each top diff evenly over its
    bin."""

    type = "PSROIPooling"
    exact_num_bottom_blobs = 2
    exact_num_top_blobs = 1

    def setup(self, bottom, top):
        p = self.param.psroi_pooling_param
        if p.output_dim <= 0 or p.group_size <= 0:
            self.fail("psroi_pooling_param: output_dim and group_size must be > 0")

    def reshape(self, bottom, top):
        p = self.param.psroi_pooling_param
        if bottom[0].channels != p.output_dim * p.group_size ** 2:
            self.fail(f"bottom 0 has {bottom[0].channels} channels; output_dim x group_size^2 "
                      f"= {p.output_dim * p.group_size ** 2}")
        top[0].reshape((bottom[1].num, p.output_dim, p.group_size, p.group_size))

    def _bins(self, rois, height, width):
        """Each ROI's bin edges as the fork's float32 arithmetic gives them: (R, G) each."""
        p = self.param.psroi_pooling_param
        f32, scale, g = torch.float32, torch.tensor(p.spatial_scale, dtype=torch.float32), p.group_size
        r = c_round(rois.to(torch.float64))
        start_w, start_h = r[:, 1].to(f32) * scale, r[:, 2].to(f32) * scale
        end_w, end_h = (r[:, 3] + 1).to(f32) * scale, (r[:, 4] + 1).to(f32) * scale
        bin_w = torch.clamp((end_w - start_w).double(), min=0.1).to(f32) / g
        bin_h = torch.clamp((end_h - start_h).double(), min=0.1).to(f32) / g
        k = torch.arange(g, dtype=f32)
        edges = []
        for size, start, limit in ((bin_h, start_h, height), (bin_w, start_w, width)):
            lo = torch.floor(k * size[:, None] + start[:, None]).long().clamp(0, limit)
            hi = torch.ceil((k + 1) * size[:, None] + start[:, None]).long().clamp(0, limit)
            edges += [lo, hi]
        return edges

    def _geometry(self, bottom):
        p, x = self.param.psroi_pooling_param, bottom[0].data
        n, c, height, width = x.shape
        rois = bottom[1].data.reshape(-1, 5).cpu()
        items = rois[:, 0].long()
        if ((items < 0) | (items >= n)).any():
            self.fail(f"an ROI names a batch item outside 0..{n - 1}")
        h0, h1, w0, w1 = (e.to(x.device) for e in self._bins(rois, height, width))
        g, dev = p.group_size, x.device
        # Index tensors of shape (R, D, G, G): the bin (i, j) of output channel d.
        shape = (len(rois), p.output_dim, g, g)
        i = torch.arange(g, device=dev).view(1, 1, g, 1)
        j = torch.arange(g, device=dev).view(1, 1, 1, g)
        d = torch.arange(p.output_dim, device=dev).view(1, -1, 1, 1)
        channels = ((d * g + i) * g + j).expand(shape)
        h0, h1 = h0[:, None, :, None].expand(shape), h1[:, None, :, None].expand(shape)
        w0, w1 = w0[:, None, None, :].expand(shape), w1[:, None, None, :].expand(shape)
        area = ((h1 - h0).clamp(min=0) * (w1 - w0).clamp(min=0)).to(x.dtype)
        return items.to(dev).view(-1, 1, 1, 1).expand(shape), channels, h0, h1, w0, w1, area

    def forward(self, bottom, top):
        x = bottom[0].data
        items, channels, h0, h1, w0, w1, area = self.geometry = self._geometry(bottom)
        # Window sums from an integral image, accumulated in float64 so that a large map
        # loses nothing against the fork's direct sums.
        integral = torch.nn.functional.pad(x.double().cumsum(2).cumsum(3), (1, 0, 1, 0))
        sums = _box_sums(integral, items, channels, h0, h1, w0, w1).to(x.dtype)
        top[0].data[...] = torch.where(area > 0, sums / area.clamp(min=1), torch.zeros_like(sums))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        items, channels, h0, h1, w0, w1, area = self.geometry
        n, c, height, width = bottom[0].shape
        value = torch.where(area > 0, top[0].diff / area.clamp(min=1), torch.zeros_like(area))
        # Add each bin's share at its window's four corners, then integrate: the inverse of
        # the forward's integral image.
        corners = torch.zeros((n, c, height + 1, width + 1), dtype=torch.float64,
                              device=value.device)
        value = value.double()
        for hh, ww, sign in ((h0, w0, 1), (h0, w1, -1), (h1, w0, -1), (h1, w1, 1)):
            corners.index_put_((items, channels, hh, ww), sign * value, accumulate=True)
        grad = corners.cumsum(2).cumsum(3)[:, :, :height, :width]
        bottom[0].diff[...] = grad.to(bottom[0].diff.dtype)


@register_layer
class ProposalLayer(Layer):
    """OpenCV dnn's region proposals: anchors (ratios x scales of a base_size box, centred
    on every feature cell, feat_stride apart) moved by the deltas (bottom[1], 4 per anchor),
    clipped to the image (bottom[2] = im_info rows, cols), the best pre_nms_topn by
    objectness (the second half of bottom[0]'s channels), NMS at nms_thresh, then the best
    post_nms_topn as rows (0, x1, y1, x2, y2), zero-padded to post_nms_topn; top[1], if
    asked for, holds their scores. min_size is read and not applied, as in OpenCV."""

    type = "Proposal"
    exact_num_bottom_blobs = 3
    min_top_blobs = 1
    max_top_blobs = 2

    def setup(self, bottom, top):
        p = self.param.proposal_param
        ratios = list(p.ratio) or [0.5, 1.0, 2.0]
        scales = list(p.scale) or [8.0, 16.0, 32.0]
        f32 = torch.float32
        base = torch.tensor(float(p.base_size), dtype=f32)
        sizes = []
        for ratio in ratios:
            width = torch.floor(base / torch.sqrt(torch.tensor(ratio, dtype=f32)) + 0.5)
            height = torch.floor(width * ratio + 0.5)
            sizes += [(scale * width, scale * height) for scale in scales]
        self.sizes = torch.tensor(sizes, dtype=f32)              # (A, 2) widths, heights
        self.num_anchors = len(sizes)

    def reshape(self, bottom, top):
        if bottom[0].num != 1:
            self.fail(f"takes one image at a time (bottom 0 has {bottom[0].num})")
        if bottom[0].channels != 2 * self.num_anchors or \
                bottom[1].channels != 4 * self.num_anchors:
            self.fail(f"{self.num_anchors} anchors need {2 * self.num_anchors} score and "
                      f"{4 * self.num_anchors} delta channels; bottoms have "
                      f"{bottom[0].channels} and {bottom[1].channels}")
        post = self.param.proposal_param.post_nms_topn
        top[0].reshape((post, 5))
        if len(top) > 1:
            top[1].reshape((post, 1))

    def anchors(self, height, width):
        """(H W A, 4) boxes in OpenCV PriorBox's unnormalised convention, cells row-major."""
        p = self.param.proposal_param
        step = float(p.feat_stride)
        offset = torch.tensor(0.5 * p.base_size / p.feat_stride, dtype=torch.float32)
        cy = (torch.arange(height, dtype=torch.float32) + offset) * step
        cx = (torch.arange(width, dtype=torch.float32) + offset) * step
        cy, cx = cy.view(-1, 1, 1), cx.view(1, -1, 1)
        w, h = self.sizes[:, 0].view(1, 1, -1), self.sizes[:, 1].view(1, 1, -1)
        boxes = torch.stack(torch.broadcast_tensors(cx - w * 0.5, cy - h * 0.5,
                                                    cx + w * 0.5 - 1, cy + h * 0.5 - 1), -1)
        return boxes.reshape(-1, 4)

    def forward(self, bottom, top):
        p = self.param.proposal_param
        a = self.num_anchors
        _, _, height, width = bottom[0].shape
        scores = bottom[0].data[0, a:].permute(1, 2, 0).reshape(-1).float().cpu()
        deltas = bottom[1].data[0].permute(1, 2, 0).reshape(-1, 4).float().cpu()
        info = bottom[2].data.reshape(-1).float().cpu()
        prior = self.anchors(height, width)
        pw, ph = prior[:, 2] - prior[:, 0] + 1, prior[:, 3] - prior[:, 1] + 1
        px, py = prior[:, 0] + pw * 0.5, prior[:, 1] + ph * 0.5
        cx, cy = deltas[:, 0] * pw + px, deltas[:, 1] * ph + py
        w, h = torch.exp(deltas[:, 2]) * pw, torch.exp(deltas[:, 3]) * ph
        # Clipped to the image OpenCV makes of im_info: int(rows) x int(cols) pixels.
        xmax, ymax = float(int(info[1]) - 1), float(int(info[0]) - 1)
        boxes = torch.stack([(cx - w * 0.5).clamp(0, xmax), (cy - h * 0.5).clamp(0, ymax),
                             (cx + w * 0.5).clamp(0, xmax), (cy + h * 0.5).clamp(0, ymax)], -1)
        keep = bbox_util.nms(boxes, scores, None, p.nms_thresh, top_k=p.pre_nms_topn,
                             normalized=False, limit=p.post_nms_topn)
        keep = torch.tensor(keep, dtype=torch.long)
        keep = keep[torch.sort(scores[keep], descending=True, stable=True).indices]
        rois = torch.zeros((p.post_nms_topn, 5), dtype=torch.float32)
        rois[:len(keep), 1:] = boxes[keep]
        top[0].data[...] = rois.to(top[0].data)
        if len(top) > 1:
            kept = torch.zeros((p.post_nms_topn, 1), dtype=torch.float32)
            kept[:len(keep), 0] = scores[keep]
            top[1].data[...] = kept.to(top[1].data)
