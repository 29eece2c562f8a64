"""The forks' box layers: PriorBox, Permute, Normalize, DetectionOutput, DetectionEvaluate,
ROIPooling; values checked by hand or against torch, gradients in float64."""
import math

import numpy as np
import pytest
import torch

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.testing import check_gradient, make_layer, random_blob


def run(layer, bottom, num_tops=1):
    top = [Blob((), bottom[0].dtype, bottom[0].device) for _ in range(num_tops)]
    layer.layer_setup(bottom, top)
    layer.forward(bottom, top)
    return top


def test_prior_box_hand_values(device):
    layer = make_layer('type: "PriorBox" prior_box_param { min_size: 4 max_size: 9 '
                       'aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 '
                       'variance: 0.2 }', device=device)
    feat, img = random_blob((1, 3, 2, 2), device=device), random_blob((1, 3, 8, 8), device=device)
    top = run(layer, [feat, img])[0]
    assert top.shape == (1, 2, 2 * 2 * 4 * 4)   # 4 priors per cell: 1, sqrt(4 9), r 2, r 1/2
    boxes = top.data[0, 0].view(2, 2, 4, 4).cpu().float()
    # Cell (0, 0): centre (2, 2) on an 8 x 8 image (step 4, offset 0.5).
    assert torch.allclose(boxes[0, 0, 0], torch.tensor([0, 0, 4, 4.]) / 8)
    assert torch.allclose(boxes[0, 0, 1], torch.tensor([-1, -1, 5, 5.]) / 8)
    w, h = 4 * math.sqrt(2), 4 / math.sqrt(2)
    assert torch.allclose(boxes[0, 0, 2], torch.tensor([2 - w / 2, 2 - h / 2, 2 + w / 2,
                                                        2 + h / 2]) / 8, atol=1e-6)
    assert torch.allclose(boxes[1, 0, 0], torch.tensor([0, 4, 4, 8.]) / 8)   # row 1, column 0
    var = top.data[0, 1].view(-1, 4).cpu().float()
    assert torch.allclose(var, torch.tensor([0.1, 0.1, 0.2, 0.2]).expand_as(var))


def test_prior_box_clip_and_explicit_sizes(device):
    layer = make_layer('type: "PriorBox" prior_box_param { min_size: 10 clip: true img_size: 20 '
                       'step: 10 offset: 0 }', device=device)
    top = run(layer, [random_blob((1, 1, 2, 2), device=device)])[0]
    boxes = top.data[0, 0].view(-1, 4).cpu().float()
    assert torch.allclose(boxes[0], torch.tensor([0, 0, 0.25, 0.25]))   # clipped at 0
    assert float(top.data[0, 1].min()) == pytest.approx(0.1)


def test_prior_box_refuses_missing_min_size():
    with pytest.raises(LayerSetupError, match="min_size"):
        run(make_layer('type: "PriorBox" prior_box_param { }'), [random_blob((1, 1, 2, 2)),
                                                                 random_blob((1, 1, 4, 4))])


@pytest.mark.parametrize("order", ["order: 0 order: 2 order: 3 order: 1", "order: 3 order: 1",
                                   ""])
def test_permute(device, order):
    layer = make_layer(f'type: "Permute" permute_param {{ {order} }}', device=device)
    x = random_blob((2, 3, 4, 5), device=device)
    top = run(layer, [x])[0]
    given = [int(v) for v in order.replace("order:", "").split()]
    full = given + [i for i in range(4) if i not in given]
    assert torch.equal(top.data, x.data.permute(full))
    check_gradient(make_layer(f'type: "Permute" permute_param {{ {order} }}', device=device),
                   [random_blob((2, 3, 2, 3), device=device)])


@pytest.mark.parametrize("across, shared", [("true", "true"), ("false", "false"),
                                            ("true", "false"), ("false", "true")])
def test_normalize(device, across, shared):
    text = (f'type: "Normalize" norm_param {{ across_spatial: {across} channel_shared: {shared} '
            f'scale_filler {{ type: "uniform" min: 1 max: 3 }} }}')
    x = random_blob((2, 3, 2, 3), device=device)
    layer = make_layer(text, device=device)
    top = run(layer, [x])[0]
    v = x.data
    norm = (v.square().sum((1, 2, 3) if across == "true" else (1,), keepdim=True) + 1e-10).sqrt()
    scale = layer.blobs[0].data.reshape(1, -1, 1, 1)
    assert torch.allclose(top.data, v / norm * scale)
    # The fork's bottom gradient leaves a per-channel scale out of the norm's sum: it is the
    # true gradient when the channels share one value (the golden cases check the rest).
    text = text.replace('type: "uniform" min: 1 max: 3', 'type: "constant" value: 2.5')
    check_gradient(make_layer(text, device=device), [random_blob((2, 3, 2, 3), device=device)])


def roi_layer(h=2, w=3, scale=0.5, device="cpu"):
    return make_layer(f'type: "ROIPooling" roi_pooling_param {{ pooled_h: {h} pooled_w: {w} '
                      f'spatial_scale: {scale} }}', device=device)


def reference_roi_pool(x, rois, ph, pw, scale):
    """A direct transcription of the pooling rule, one bin at a time."""
    out = np.zeros((len(rois), x.shape[1], ph, pw))
    for r, (b, *c) in enumerate(rois):
        x1, y1, x2, y2 = (int(np.sign(v * scale) * np.floor(abs(v * scale) + 0.5)) for v in c)
        rh, rw = max(y2 - y1 + 1, 1), max(x2 - x1 + 1, 1)
        for i in range(ph):
            for j in range(pw):
                hs = min(max(int(np.floor(i * rh / ph)) + y1, 0), x.shape[2])
                he = min(max(int(np.ceil((i + 1) * rh / ph)) + y1, 0), x.shape[2])
                ws = min(max(int(np.floor(j * rw / pw)) + x1, 0), x.shape[3])
                we = min(max(int(np.ceil((j + 1) * rw / pw)) + x1, 0), x.shape[3])
                if he > hs and we > ws:
                    out[r, :, i, j] = x[int(b), :, hs:he, ws:we].max((1, 2))
    return out


ROIS = [[0, 0, 0, 7, 5], [1, 2, 3, 13, 13], [0, 5, 1, 6, 2], [1, -4, -4, 30, 30], [0, 3, 3, 3, 3]]


def test_roi_pooling_matches_the_rule(device):
    x = random_blob((2, 3, 7, 8), device=device)
    rois = random_blob((len(ROIS), 5), device=device, values=ROIS)
    top = run(roi_layer(device=device), [x, rois])[0]
    expect = reference_roi_pool(x.data.cpu().numpy(), ROIS, 2, 3, 0.5)
    assert np.allclose(top.data.cpu().numpy(), expect)


def test_roi_pooling_gradient(device):
    x = random_blob((2, 1, 4, 5), device=device)
    rois = [[0, 0, 0, 7, 5], [1, 2, 3, 13, 13], [0, 5, 1, 6, 2]]
    rois = random_blob((3, 5), device=device, values=rois)
    check_gradient(roi_layer(device=device), [x, rois], check_bottom=[0])


def detection_output(extra="", device="cpu", classes=3):
    return make_layer(f'type: "DetectionOutput" detection_output_param {{ num_classes: {classes} '
                      f'share_location: true background_label_id: 0 code_type: CENTER_SIZE '
                      f'nms_param {{ nms_threshold: 0.45 top_k: 50 }} {extra} }}',
                      dtype=torch.float32, device=device)


def test_detection_output_decodes_and_suppresses(device):
    # Two priors that overlap (IoU 0.6) and one apart; zero offsets decode to the priors.
    priors = [[0.1, 0.1, 0.5, 0.5], [0.15, 0.1, 0.55, 0.5], [0.6, 0.6, 0.9, 0.9]]
    prior = Blob((1, 2, 12), torch.float32, device)
    prior.data[0, 0] = torch.tensor(priors).view(-1)
    prior.data[0, 1] = 0.1
    loc = Blob((1, 12), torch.float32, device)
    conf = Blob((1, 9), torch.float32, device)
    conf.data[...] = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2], [0.5, 0.05, 0.45]]).view(1, 9)
    top = run(detection_output("confidence_threshold: 0.15", device), [loc, conf, prior])[0]
    rows = top.data.view(-1, 7).cpu()
    # class 1: prior 0 (0.8) suppresses prior 1 (0.7); class 2: priors 2 (0.45), 1 (0.2).
    assert rows[:, 1].tolist() == [1, 2, 2]
    assert torch.allclose(rows[:, 2], torch.tensor([0.8, 0.45, 0.2]))
    assert torch.allclose(rows[0, 3:], torch.tensor(priors[0]), atol=1e-6)
    assert torch.allclose(rows[1, 3:], torch.tensor(priors[2]), atol=1e-6)
    top = run(detection_output("confidence_threshold: 0.15 keep_top_k: 2", device),
              [loc, conf, prior])[0]
    assert top.data.view(-1, 7)[:, 2].tolist() == pytest.approx([0.8, 0.45])
    top = run(detection_output("confidence_threshold: 0.99", device), [loc, conf, prior])[0]
    assert top.data.view(-1, 7).tolist() == [[0, -1, -1, -1, -1, -1, -1]]


def test_detection_evaluate_rows(device):
    det = Blob((1, 1, 3, 7), torch.float32, device)
    det.data[...] = torch.tensor([[0, 1, 0.9, 0.1, 0.1, 0.4, 0.4],
                                  [0, 1, 0.8, 0.12, 0.1, 0.4, 0.4],
                                  [0, 2, 0.7, 0.5, 0.5, 0.6, 0.6]]).view(det.shape)
    gt = Blob((1, 1, 2, 8), torch.float32, device)
    gt.data[...] = torch.tensor([[0, 1, 0, 0.1, 0.1, 0.4, 0.4, 0],
                                 [0, 2, 0, 0.0, 0.0, 0.1, 0.1, 0]]).view(gt.shape)
    layer = make_layer('type: "DetectionEvaluate" detection_evaluate_param { num_classes: 3 }',
                       dtype=torch.float32, device=device)
    rows = run(layer, [det, gt])[0].data.view(-1, 5).cpu().tolist()
    assert rows[:2] == [[-1, 1, 1, -1, -1], [-1, 2, 1, -1, -1]]
    # class 1: the first claims the box, the second is a duplicate; class 2 misses.
    assert [r[3:] for r in rows[2:]] == [[1, 0], [0, 1], [0, 1]]


# -- the forks' PriorBox variants (caffe/net_dialects.py): expected boxes written out from the
# forks' prior_box_layer.cpp loops, one box at a time.
def textboxes_priors(fh, fw, ih, iw, min_size, max_size, ratios):
    """MhLiao/TextBoxes: every box, then the same box centred at (h + 1) step_y."""
    sx, sy, out = iw / fw, ih / fh, []
    for h in range(fh):
        for w in range(fw):
            cx, cy, cy1 = (w + 0.5) * sx, (h + 0.5) * sy, (h + 1.0) * sy
            sides = [(min_size, min_size)]
            if max_size:
                sides.append((math.sqrt(min_size * max_size),) * 2)
            sides += [(min_size * math.sqrt(r), min_size / math.sqrt(r)) for r in ratios]
            for bw, bh in sides:
                for y in (cy, cy1):
                    out.append([(cx - bw / 2) / iw, (y - bh / 2) / ih,
                                (cx + bw / 2) / iw, (y + bh / 2) / ih])
    return torch.tensor(out, dtype=torch.float64).clamp(0, 1)


def test_textboxes_prior_box(device):
    layer = make_layer('type: "PriorBox" dialect: "textboxes" prior_box_param { min_size: 3.5 '
                       'max_size: 7 aspect_ratio: 2 aspect_ratio: 5 flip: false }', device=device)
    feat, img = random_blob((1, 2, 3, 4), device=device), random_blob((1, 3, 12, 20), device=device)
    top = run(layer, [feat, img])[0]
    expected = textboxes_priors(3, 4, 12, 20, 3.5, 7.0, [2.0, 5.0])   # clip: TextBoxes' default
    assert top.shape == (1, 2, expected.numel())
    torch.testing.assert_close(top.data[0, 0].view(-1, 4).cpu(), expected)


def faceboxes_priors(fh, fw, ih, iw, step, min_sizes):
    """sfzhang15/FaceBoxes: 32 and 64 pixel boxes tiled 4 x 4 (8 px apart) and 2 x 2 (16 px),
    half side (s - 1) / 2."""
    out = []
    for h in range(fh):
        for w in range(fw):
            cx, cy = (w + 0.5) * step, (h + 0.5) * step
            for s in min_sizes:
                n, d = {32: (2, 8), 64: (1, 16)}.get(s, (0, 0))
                for i in range(-n, max(n, 1)):
                    for j in range(-n, max(n, 1)):
                        half = (s - 1) / 2
                        out.append([(cx + j * d - half) / iw, (cy + i * d - half) / ih,
                                    (cx + j * d + half) / iw, (cy + i * d + half) / ih])
    return torch.tensor(out, dtype=torch.float64)


def test_faceboxes_prior_box(device):
    layer = make_layer('type: "PriorBox" dialect: "faceboxes" prior_box_param { min_size: 32 '
                       'min_size: 64 min_size: 128 clip: false step: 32 offset: 0.5 }',
                       device=device)
    feat, img = random_blob((1, 2, 2, 3), device=device), random_blob((1, 3, 64, 96), device=device)
    top = run(layer, [feat, img])[0]
    expected = faceboxes_priors(2, 3, 64, 96, 32, [32, 64, 128])
    assert top.shape == (1, 2, 2 * 3 * 21 * 4)                         # the fork's 21 priors
    torch.testing.assert_close(top.data[0, 0].view(-1, 4).cpu(), expected)


def test_prior_box_unknown_dialect_is_named():
    with pytest.raises(LayerSetupError, match="textboxes, faceboxes"):
        run(make_layer('type: "PriorBox" dialect: "boxes" prior_box_param { min_size: 4 }'),
            [random_blob((1, 1, 2, 2)), random_blob((1, 1, 8, 8))])
