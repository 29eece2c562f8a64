"""R-FCN's PSROIPooling and OpenCV's Proposal (caffe/layers/detection_regions.py).

Their golden cases (tests/golden_forks/rfcn_psroi_pooling*) come from R-FCN's CUDA kernels;
here: a direct reference, float64 gradients, OpenCV dnn as the forward oracle, bad input.
"""
import numpy as np
import pytest
import torch

import caffe
from caffe.errors import CaffeError
from caffe.testing import check_gradient, make_layer, random_blob
from tests.layers.test_detection import run
from tests.ranked import match_rows

ROIS = np.array([[0, 0, 0, 60, 40], [1, 10, 12, 90, 70], [0, 40, 20, 47, 27],
                 [1, -10, -10, 200, 200], [0, 30, 30, 30, 30], [1, 100.4, 8.6, 170.5, 139.5]])


def psroi_text(dim=2, group=3, scale=0.0625):
    return (f'type: "PSROIPooling" psroi_pooling_param {{ spatial_scale: {scale} '
            f'output_dim: {dim} group_size: {group} }}')


def reference_psroi(x, rois, dim, group, scale):
    """R-FCN's forward, written out element by element (C rounding, x2 + 1, min size 0.1)."""
    def c_round(v):
        return np.sign(v) * np.floor(np.abs(v) + 0.5)
    out = np.zeros((len(rois), dim, group, group))
    height, width = x.shape[2:]
    for r, (b, x1, y1, x2, y2) in enumerate(rois):
        sw, sh = c_round(x1) * scale, c_round(y1) * scale
        ew, eh = (c_round(x2) + 1) * scale, (c_round(y2) + 1) * scale
        bw, bh = max(ew - sw, 0.1) / group, max(eh - sh, 0.1) / group
        for d in range(dim):
            for i in range(group):
                for j in range(group):
                    h0 = min(max(int(np.floor(i * bh + sh)), 0), height)
                    h1 = min(max(int(np.ceil((i + 1) * bh + sh)), 0), height)
                    w0 = min(max(int(np.floor(j * bw + sw)), 0), width)
                    w1 = min(max(int(np.ceil((j + 1) * bw + sw)), 0), width)
                    if h1 > h0 and w1 > w0:
                        c = (d * group + i) * group + j
                        out[r, d, i, j] = x[int(b), c, h0:h1, w0:w1].mean()
    return out


def test_psroi_pooling_equals_the_written_out_forward(device):
    g = torch.Generator().manual_seed(3)
    x = random_blob((2, 18, 9, 11), device=device, generator=g)
    rois = random_blob((6, 5), values=ROIS, device=device)
    top, = run(make_layer(psroi_text(), device=device), [x, rois])
    np.testing.assert_allclose(top.data.cpu().numpy(),
                               reference_psroi(x.data.cpu().numpy(), ROIS, 2, 3, 0.0625),
                               rtol=1e-10, atol=1e-12)


def test_psroi_pooling_gradient(device):
    g = torch.Generator().manual_seed(4)
    x = random_blob((2, 8, 5, 6), device=device, generator=g)
    rois = random_blob((4, 5), values=[[0, 0, 0, 40, 30], [1, 8, 4, 60, 70], [0, 20, 20, 26, 30],
                                       [1, -20, 0, 100, 15]], device=device)
    assert check_gradient(make_layer(psroi_text(dim=2, group=2, scale=0.125), device=device),
                          [x, rois], check_bottom=[0]) > 0


def test_psroi_pooling_equals_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (2, 98, 7, 9)).astype(np.float32)
    rois = ROIS.astype(np.float32)
    (tmp_path / "n.prototxt").write_text(
        'name: "rfcn" input: "x" input_shape { dim: 2 dim: 98 dim: 7 dim: 9 }\n'
        'input: "rois" input_shape { dim: 6 dim: 5 }\n'
        f'layer {{ name: "ps" {psroi_text(dim=2, group=7)} bottom: "x" bottom: "rois" '
        'top: "y" }\n')
    cv = cv2.dnn.readNetFromCaffe(str(tmp_path / "n.prototxt"))
    cv.setInput(x, "x")
    cv.setInput(rois, "rois")
    expected = cv.forward("ps")
    net = caffe.Net(str(tmp_path / "n.prototxt"), caffe.TEST)
    np.testing.assert_allclose(net.forward(x=x, rois=rois)["y"], expected, atol=1e-6)


def test_psroi_pooling_refuses_bad_input():
    layer = make_layer(psroi_text(dim=2, group=3))
    with pytest.raises(CaffeError, match="channels; output_dim x group_size"):
        run(layer, [random_blob((1, 17, 4, 4)), random_blob((1, 5), values=[[0, 0, 0, 9, 9]])])
    layer = make_layer(psroi_text(dim=2, group=3))
    with pytest.raises(CaffeError, match="batch item outside 0..0"):
        run(layer, [random_blob((1, 18, 4, 4)), random_blob((1, 5), values=[[1, 0, 0, 9, 9]])])


PROPOSAL = ('proposal_param { ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 '
            'feat_stride: 16 pre_nms_topn: %d post_nms_topn: %d nms_thresh: %s }')


def proposal_net(tmp_path, height, width, pre=1000, post=120, nms=0.6):
    (tmp_path / "p.prototxt").write_text(
        f'name: "p"\ninput: "cls" input_shape {{ dim: 1 dim: 18 dim: {height} dim: {width} }}\n'
        f'input: "bbox" input_shape {{ dim: 1 dim: 36 dim: {height} dim: {width} }}\n'
        'input: "info" input_shape { dim: 1 dim: 3 }\n'
        'layer { name: "proposal" type: "Proposal" bottom: "cls" bottom: "bbox" bottom: "info" '
        f'top: "rois" top: "scores" {PROPOSAL % (pre, post, nms)} }}\n')
    return str(tmp_path / "p.prototxt")


@pytest.mark.parametrize("height, width, pre, post, nms, seed", [
    (14, 19, 1000, 120, 0.6, 0), (14, 19, 6000, 300, 0.7, 1), (3, 4, 50, 120, 0.5, 2),
    (9, 7, 200, 40, 0.3, 3)])
def test_proposal_equals_opencv(tmp_path, height, width, pre, post, nms, seed):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(seed)
    cls = rng.uniform(0, 1, (1, 18, height, width)).astype(np.float32)
    bbox = rng.normal(0, 0.3, (1, 36, height, width)).astype(np.float32)
    info = np.array([[height * 16 - 5, width * 16 - 3, 1.0]], np.float32)
    path = proposal_net(tmp_path, height, width, pre, post, nms)
    cv = cv2.dnn.readNetFromCaffe(path)
    for name, value in (("cls", cls), ("bbox", bbox), ("info", info)):
        cv.setInput(value, name)
    expected = cv.forward("proposal").reshape(-1, 5)
    out = caffe.Net(path, caffe.TEST).forward(cls=cls, bbox=bbox, info=info)
    kept = out["rois"].any(1)
    scores = out["scores"][:, 0]
    # Boxes of equal objectness may come in either order (a tie in the inputs); all else is
    # OpenCV's order.
    match_rows(out["rois"], expected, tol=1e-4 + 1e-6 * np.abs(expected), ranked_by=scores)
    assert (np.diff(scores[kept]) <= 0).all() and not scores[~kept].any()
    # The scores are the objectness of the boxes kept (the second half of the channels).
    assert set(np.round(scores[kept], 6)) <= set(np.round(cls[0, 9:].ravel(), 6))


def test_proposal_refuses_a_batch_and_wrong_channels(tmp_path):
    layer = make_layer(f'type: "Proposal" {PROPOSAL % (100, 10, 0.7)}', dtype=torch.float32)
    info = random_blob((1, 3), values=[[64, 64, 1]], dtype=torch.float32)
    with pytest.raises(CaffeError, match="one image at a time"):
        run(layer, [random_blob((2, 18, 4, 4), dtype=torch.float32),
                    random_blob((2, 36, 4, 4), dtype=torch.float32), info], num_tops=2)
    layer = make_layer(f'type: "Proposal" {PROPOSAL % (100, 10, 0.7)}', dtype=torch.float32)
    with pytest.raises(CaffeError, match="9 anchors need 18 score and 36 delta"):
        run(layer, [random_blob((1, 18, 4, 4), dtype=torch.float32),
                    random_blob((1, 32, 4, 4), dtype=torch.float32), info], num_tops=2)


def test_the_new_fields_keep_their_dialects_numbers_on_disk(tmp_path):
    """OpenCV's proposal_param is 201 on disk (SSD's multibox_loss_param here), R-FCN's
    psroi_pooling_param 10001."""
    from caffe.proto import caffe_pb2, dialects
    net = caffe_pb2.NetParameter()
    proposal = net.layer.add(name="p", type="Proposal")
    proposal.proposal_param.feat_stride = 8
    proposal.proposal_param.ratio.append(1.0)
    pooling = net.layer.add(name="ps", type="PSROIPooling")
    pooling.psroi_pooling_param.output_dim = 21
    pooling.psroi_pooling_param.group_size = 7
    pooling.psroi_pooling_param.spatial_scale = 0.0625
    data = dialects.to_disk(net)
    on_disk = caffe_pb2.NetParameter.FromString(data).layer    # read without the table
    assert not on_disk[0].HasField("proposal_param") and not on_disk[1].ListFields()[2:]
    assert [dialects.unknown_fields(layer.SerializeToString()) for layer in on_disk] == \
        [[201], [10001]]
    back = caffe_pb2.NetParameter.FromString(dialects.to_canonical(data))
    assert back.layer[0].proposal_param.feat_stride == 8
    assert back.layer[1].psroi_pooling_param.group_size == 7
