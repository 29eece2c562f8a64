"""SmoothL1Loss in both forks' dialects and SSD's MultiBoxLoss: values and float64 gradients."""
import numpy as np
import pytest
import torch

from caffe.blob import Blob
from caffe.errors import LayerSetupError
from caffe.layers import bbox_util
from caffe.testing import check_gradient, make_layer, random_blob


def run(layer, bottom):
    top = [Blob((), bottom[0].dtype, bottom[0].device)]
    layer.layer_setup(bottom, top)
    layer.forward(bottom, top)
    return top[0]


def smooth(d, sigma=1.0):
    s2 = sigma * sigma
    return np.where(np.abs(d) < 1 / s2, 0.5 * s2 * d * d, np.abs(d) - 0.5 / s2)


def blobs(device, n=4, shape=(3, 2, 5), scale=2.0):
    g = torch.Generator().manual_seed(5)
    return [random_blob(shape, -scale, scale, device=device, generator=g) for _ in range(n)]


def test_smooth_l1_two_bottoms_same_in_both_dialects(device):
    p, t = blobs(device, 2)
    ssd = run(make_layer('type: "SmoothL1Loss"', device=device), [p, t])
    frcnn = run(make_layer('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 1 }',
                           device=device), [p, t])
    d = (p.data - t.data).cpu().numpy()
    assert float(ssd.data) == pytest.approx(smooth(d).sum() / 3)
    assert float(frcnn.data) == pytest.approx(float(ssd.data))


def test_smooth_l1_ssd_weight(device):
    p, t, w = blobs(device, 3)
    w.data[...] = (w.data > 0).to(w.dtype)            # SSD's weights are 0/1 masks
    layer = make_layer('type: "SmoothL1Loss"', device=device)
    top = run(layer, [p, t, w])
    assert layer.dialect == "ssd"
    d = ((p.data - t.data) * w.data).cpu().numpy()
    assert float(top.data) == pytest.approx(smooth(d).sum() / 3)
    check_gradient(make_layer('type: "SmoothL1Loss"', device=device), [p, t, w],
                   check_bottom=[0, 1], kink=1.0, kink_range=1e-3)


@pytest.mark.parametrize("sigma", [1.0, 3.0])
def test_smooth_l1_faster_rcnn_sigma_and_weights(device, sigma):
    p, t, w_in, w_out = blobs(device, 4)
    w_out.data[...] = w_out.data.abs()
    text = f'type: "SmoothL1Loss" smooth_l1_loss_param {{ sigma: {sigma} }}'
    layer = make_layer(text, device=device)
    top = run(layer, [p, t, w_in, w_out])
    assert layer.dialect == "faster-rcnn"
    d = ((p.data - t.data) * w_in.data).cpu().numpy()
    expect = (w_out.data.cpu().numpy() * smooth(d, sigma)).sum() / 3
    assert float(top.data) == pytest.approx(expect)
    check_gradient(make_layer(text, device=device), [p, t, w_in, w_out], check_bottom=[0, 1])


def test_smooth_l1_four_bottoms_need_no_param(device):
    layer = make_layer('type: "SmoothL1Loss"', device=device)
    run(layer, blobs(device, 4))
    assert layer.dialect == "faster-rcnn" and layer.sigma2 == 1.0


@pytest.mark.parametrize("n", [3, 4])
def test_smooth_l1_weights_get_no_gradient_even_when_asked(device, n):
    """Both forks' backward fills only bottoms 0 and 1; py-faster-rcnn's train nets ask for
    the weights too (they come from a Python layer downstream of the RPN)."""
    bottom = blobs(device, n)
    layer = make_layer('type: "SmoothL1Loss"', device=device)
    top = run(layer, bottom)
    top.diff[...] = 1
    for b in bottom:
        b.diff[...] = 7
    layer.backward([top], [True] * n, bottom)
    assert all(bool((b.diff == 7).all()) for b in bottom[2:])
    assert not bool((bottom[0].diff == 7).any())
    np.testing.assert_array_equal(bottom[1].diff.cpu().numpy(), -bottom[0].diff.cpu().numpy())


def test_smooth_l1_refuses_sigma_with_three_bottoms():
    with pytest.raises(LayerSetupError, match="inside and outside"):
        run(make_layer('type: "SmoothL1Loss" smooth_l1_loss_param { sigma: 3 }'), blobs("cpu", 3))


# -- MultiBoxLoss -------------------------------------------------------------
def priors(device, dtype=torch.float64):
    """A 3 x 3 grid of 0.4-wide priors with variances (0.1, 0.1, 0.2, 0.2)."""
    c = torch.tensor([0.2, 0.5, 0.8], dtype=dtype)
    cy, cx = torch.meshgrid(c, c, indexing="ij")
    boxes = torch.stack([cx - 0.2, cy - 0.2, cx + 0.2, cy + 0.2], -1).view(-1, 4)
    blob = Blob((1, 2, boxes.numel()), dtype, device)
    blob.data[0, 0] = boxes.view(-1).to(device)
    blob.data[0, 1] = torch.tensor([0.1, 0.1, 0.2, 0.2], dtype=dtype).repeat(9).to(device)
    return blob


GT = [[0, 1, 0, 0.05, 0.05, 0.38, 0.42, 0], [0, 2, 0, 0.55, 0.3, 0.95, 0.7, 0],
      [1, 1, 0, 0.3, 0.3, 0.7, 0.72, 0]]


def multibox_bottoms(device, classes=3, gt=GT):
    g = torch.Generator().manual_seed(11)
    loc = random_blob((2, 9 * 4), -0.5, 0.5, device=device, generator=g)
    conf = random_blob((2, 9 * classes), -1, 1, device=device, generator=g)
    label = random_blob((1, 1, len(gt), 8), device=device, values=np.array(gt).reshape(1, 1, -1, 8))
    return [loc, conf, priors(device), label]


MULTIBOX = ('type: "MultiBoxLoss" propagate_down: true propagate_down: true '
            'propagate_down: false propagate_down: false multibox_loss_param {{ num_classes: 3 '
            'share_location: true background_label_id: 0 code_type: CENTER_SIZE '
            'overlap_threshold: 0.5 neg_pos_ratio: 1 neg_overlap: 0.5 {} }} '
            'loss_param {{ normalization: VALID }}')


def test_multibox_matching_by_hand():
    gt = torch.tensor(GT, dtype=torch.float64)[:2, 3:7]
    idx, _ = bbox_util.match(gt, priors("cpu").data.view(2, -1, 4)[0], 1, 0.5)
    # Each box takes its best prior (bipartite); prior 5 also passes 0.5 with box 1.
    assert idx.tolist() == [0, -1, -1, -1, -1, 1, -1, -1, -1]


def test_multibox_loss_by_hand(device):
    """MAX_NEGATIVE with ratio 1: the matched priors plus as many hardest negatives."""
    bottom = multibox_bottoms(device)
    layer = make_layer(MULTIBOX.format("mining_type: MAX_NEGATIVE"), device=device)
    top = run(layer, bottom)
    prior = bottom[2].data.view(2, -1, 4)
    loc, conf = bottom[0].data.view(2, 9, 4), bottom[1].data.view(2, 9, 3)
    total, matches = 0.0, 0
    for i, (boxes, labels) in enumerate([(GT[:2], [1, 2]), (GT[2:], [1])]):
        gt = torch.tensor(boxes, dtype=torch.float64)[:, 3:7]
        idx, ov = bbox_util.match(gt, prior[0], 1, 0.5)
        pos = np.flatnonzero(idx > -1)
        target = bbox_util.encode(prior[0][pos], prior[1][pos], gt[idx[pos]], 2, False)
        total += smooth((loc[i, pos] - target).cpu().numpy()).sum()
        logp = torch.log_softmax(conf[i], 1)
        lab = np.zeros(9, int)
        lab[pos] = np.array(labels)[idx[pos]]
        cost = -logp[torch.arange(9), torch.from_numpy(lab)]
        neg = [j for j in np.argsort(-cost.cpu().numpy(), kind="stable")
               if idx[j] == -1 and ov[j] < 0.5][:len(pos)]
        total += float(cost[list(pos) + neg].sum())
        matches += len(pos)
    assert float(top.data) == pytest.approx(total / matches, rel=1e-6)


@pytest.mark.parametrize("params", [
    "mining_type: MAX_NEGATIVE",
    "mining_type: NONE",
    "mining_type: HARD_EXAMPLE sample_size: 6",
    pytest.param("mining_type: MAX_NEGATIVE loc_loss_type: L2 match_type: BIPARTITE",
                 marks=pytest.mark.slow),
    pytest.param("mining_type: MAX_NEGATIVE conf_loss_type: LOGISTIC", marks=pytest.mark.slow),
    "mining_type: NONE conf_loss_type: LOGISTIC",
    "mining_type: MAX_NEGATIVE code_type: CORNER use_prior_for_matching: false",
])
def test_multibox_loss_gradient(device, params):
    text = MULTIBOX.format(params)
    if "code_type: CORNER" in params:
        text = text.replace("code_type: CENTER_SIZE", "")
    check_gradient(make_layer(text, device=device), multibox_bottoms(device),
                   check_bottom=[0, 1], kink=1.0, kink_range=1e-3)


def test_multibox_without_ground_truth_counts_no_match(device):
    bottom = multibox_bottoms(device, gt=[[-1] * 8])
    top = run(make_layer(MULTIBOX.format("mining_type: MAX_NEGATIVE"), device=device), bottom)
    assert float(top.data) == 0.0
    top = run(make_layer(MULTIBOX.format("mining_type: NONE"), device=device), bottom)
    assert float(top.data) > 0      # every prior is a background example


def test_multibox_refuses_background_ground_truth():
    bottom = multibox_bottoms("cpu", gt=[[0, 0, 0, 0.1, 0.1, 0.3, 0.3, 0]])
    with pytest.raises(ValueError, match="background"):
        run(make_layer(MULTIBOX.format("")), bottom)
