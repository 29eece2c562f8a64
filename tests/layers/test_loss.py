"""Loss layers and Accuracy: gradients, hand-computed values, torch as oracle, bad input."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import caffe
from caffe.blob import Blob
from caffe.errors import CaffeError, LayerSetupError
from caffe.formats import write_binary_proto
from caffe.layer import blob_to_proto
from caffe.proto import caffe_pb2
from caffe.testing import check_gradient, make_layer, random_blob

NORMALIZATIONS = ["FULL", "VALID", "BATCH_SIZE", "NONE"]


def labels(shape, num_classes, device, ignore=None, seed=3):
    """Random integer labels, every third one replaced by `ignore` when given."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, num_classes, shape, generator=g).double()
    if ignore is not None:
        values.view(-1)[::3] = ignore
    return random_blob(shape, device=device, values=values.numpy())


def setup(layer, bottom, num_tops=1):
    top = [Blob((), bottom[0].dtype, bottom[0].device) for _ in range(num_tops)]
    layer.layer_setup(bottom, top)
    return top


def run(layer, bottom, num_tops=1):
    top = setup(layer, bottom, num_tops)
    layer.forward(bottom, top)
    return top


def loss_param(normalization, ignore):
    text = f"normalization: {normalization}"
    return text + (f" ignore_label: {ignore}" if ignore is not None else "")


# -- LossLayer contract --------------------------------------------------------------------
def test_loss_weight_defaults_to_one(device):
    layer = make_layer('type: "EuclideanLoss"', device=device)
    top = run(layer, [random_blob((2, 3), device=device), random_blob((2, 3), device=device)])
    assert list(layer.param.loss_weight) == [1.0] and layer.loss(0) == 1.0
    assert top[0].shape == () and float(top[0].diff) == 1.0


def test_given_loss_weight_is_kept(device):
    layer = make_layer('type: "EuclideanLoss" loss_weight: 0.25', device=device)
    top = setup(layer, [random_blob((2, 3), device=device), random_blob((2, 3), device=device)])
    assert layer.loss(0) == 0.25 and float(top[0].diff) == 0.25


def test_probability_top_gets_no_default_weight(device):
    layer = make_layer('type: "SoftmaxWithLoss"', device=device)
    setup(layer, [random_blob((2, 3), device=device), labels((2,), 3, device)], num_tops=2)
    assert [layer.loss(0), layer.loss(1)] == [1.0, 0.0]


def test_backward_scales_by_loss_weight(device):
    x, y = random_blob((3, 4), device=device), labels((3,), 4, device)
    diffs = []
    for weight in (1.0, 2.5):
        layer = make_layer(f'type: "SoftmaxWithLoss" loss_weight: {weight}', device=device)
        top = run(layer, [x, y])
        layer.backward(top, [True, False], [x, y])
        diffs.append(x.diff.clone())
    torch.testing.assert_close(diffs[1], 2.5 * diffs[0])


# -- SoftmaxWithLoss -------------------------------------------------------------------------
@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, 1])
def test_softmax_loss_gradient(device, normalization, ignore):
    layer = make_layer(f'type: "SoftmaxWithLoss" '
                       f'loss_param {{ {loss_param(normalization, ignore)} }}', device=device)
    x = random_blob((2, 4, 3), low=-3, high=3, device=device)
    check_gradient(layer, [x, labels((2, 1, 3), 4, device, ignore)], check_bottom=[0])


@pytest.mark.parametrize("legacy", ["true", "false"])
def test_softmax_loss_legacy_normalize(device, legacy):
    layer = make_layer(f'type: "SoftmaxWithLoss" '
                       f'loss_param {{ normalize: {legacy} ignore_label: 0 }}', device=device)
    x, y = random_blob((4, 3), device=device), labels((4,), 3, device, ignore=0)
    top = run(layer, [x, y])
    total = F.cross_entropy(x.data, y.data.long().clamp(min=0), ignore_index=0, reduction="sum")
    divisor = int((y.data != 0).sum()) if legacy == "true" else 4
    torch.testing.assert_close(top[0].data, total / divisor)


@pytest.mark.parametrize("normalization,reduction", [("VALID", "mean"), ("NONE", "sum")])
def test_softmax_loss_matches_torch(device, normalization, reduction):
    layer = make_layer(f'type: "SoftmaxWithLoss" loss_param {{ {loss_param(normalization, 2)} }}',
                       device=device)
    x = random_blob((2, 4, 3, 2), low=-4, high=4, device=device)
    y = labels((2, 3, 2), 4, device, ignore=2)
    top = run(layer, [x, y], num_tops=2)
    expected = F.cross_entropy(x.data, y.data.long(), ignore_index=2, reduction=reduction)
    torch.testing.assert_close(top[0].data, expected)
    torch.testing.assert_close(top[1].data, torch.softmax(x.data, 1))


def test_softmax_loss_axis(device):
    layer = make_layer('type: "SoftmaxWithLoss" softmax_param { axis: -1 }', device=device)
    x, y = random_blob((2, 3, 5), device=device), labels((2, 3), 5, device)
    top = run(layer, [x, y])
    expected = F.cross_entropy(x.data.reshape(6, 5), y.data.reshape(6).long())
    torch.testing.assert_close(top[0].data, expected)
    check_gradient(layer, [x, y], check_bottom=[0])


def test_softmax_loss_all_ignored_is_zero(device):
    layer = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 7 }', device=device)
    x = random_blob((3, 4), device=device)
    y = random_blob((3,), device=device, values=[7, 7, 7])
    top = run(layer, [x, y])
    layer.backward(top, [True, False], [x, y])
    assert float(top[0].data) == 0 and float(x.diff.abs().sum()) == 0


def test_softmax_loss_clamps_like_caffe(device):
    # Caffe takes log(max(p, FLT_MIN)): a hopeless prediction costs -log(FLT_MIN), not inf.
    layer = make_layer('type: "SoftmaxWithLoss"', device=device)
    x = random_blob((1, 2), device=device, values=[[0.0, 1000.0]])
    top = run(layer, [x, random_blob((1,), device=device, values=[0])])
    assert abs(float(top[0].data) - 87.33654475) < 1e-6


# -- InfogainLoss ----------------------------------------------------------------------------
def infogain_matrix(c, device, seed=5):
    g = torch.Generator().manual_seed(seed)
    return random_blob((1, 1, c, c), device=device, values=torch.rand(c, c, generator=g).numpy())


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, 0])
def test_infogain_gradient(device, normalization, ignore):
    layer = make_layer(f'type: "InfogainLoss" '
                       f'loss_param {{ {loss_param(normalization, ignore)} }}', device=device)
    x = random_blob((2, 3, 2), low=-2, high=2, device=device)
    bottom = [x, labels((2, 2), 3, device, ignore), infogain_matrix(3, device)]
    check_gradient(layer, bottom, check_bottom=[0])


def test_infogain_axis_gradient(device):
    layer = make_layer('type: "InfogainLoss" infogain_loss_param { axis: 2 }', device=device)
    x = random_blob((2, 2, 3), low=-2, high=2, device=device)
    check_gradient(layer, [x, labels((2, 2), 3, device), infogain_matrix(3, device)],
                   check_bottom=[0])


def test_infogain_identity_is_softmax_loss(device, tmp_path):
    path = tmp_path / "H.binaryproto"
    proto = blob_to_proto(Blob((1, 1, 4, 4), torch.float64), caffe_pb2.BlobProto())
    proto.double_data[:] = np.eye(4).ravel().tolist()
    write_binary_proto(path, proto)
    x, y = random_blob((3, 4, 2), device=device), labels((3, 2), 4, device, ignore=1)
    info = make_layer(f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }} '
                      f'loss_param {{ ignore_label: 1 }}', device=device)
    soft = make_layer('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }', device=device)
    t_info, t_soft = run(info, [x, y], num_tops=2), run(soft, [x, y], num_tops=2)
    torch.testing.assert_close(t_info[0].data, t_soft[0].data)
    torch.testing.assert_close(t_info[1].data, t_soft[1].data)
    info.backward(t_info, [True, False], [x, y])
    d_info = x.diff.clone()
    soft.backward(t_soft, [True, False], [x, y])
    torch.testing.assert_close(d_info, x.diff)


def test_infogain_matrix_of_wrong_shape(device):
    layer = make_layer('type: "InfogainLoss"', device=device)
    bottom = [random_blob((2, 3), device=device), labels((2,), 3, device),
              infogain_matrix(4, device)]
    with pytest.raises(LayerSetupError, match="3 x 3"):
        setup(layer, bottom)


def test_infogain_needs_a_matrix(device):
    layer = make_layer('type: "InfogainLoss"', device=device)
    with pytest.raises(LayerSetupError, match="source"):
        setup(layer, [random_blob((2, 3), device=device), labels((2,), 3, device)])


def test_infogain_refuses_legacy_normalize(device):
    layer = make_layer('type: "InfogainLoss" loss_param { normalize: true }', device=device)
    bottom = [random_blob((2, 3), device=device), labels((2,), 3, device),
              infogain_matrix(3, device)]
    with pytest.raises(LayerSetupError, match="normalization"):
        setup(layer, bottom)


# -- MultinomialLogisticLoss, HingeLoss ------------------------------------------------------
def test_multinomial_logistic_gradient(device):
    layer = make_layer('type: "MultinomialLogisticLoss"', device=device)
    p = random_blob((3, 4), low=0.2, high=1.0, device=device)
    check_gradient(layer, [p, labels((3, 1, 1, 1), 4, device)], check_bottom=[0])


def test_multinomial_logistic_value(device):
    layer = make_layer('type: "MultinomialLogisticLoss"', device=device)
    p = random_blob((2, 3), device=device, values=[[0.2, 0.5, 0.3], [0.0, 0.9, 0.1]])
    top = run(layer, [p, random_blob((2,), device=device, values=[1, 0])])
    # p = 0 is clamped at Caffe's 1e-20.
    assert abs(float(top[0].data) - (-np.log(0.5) - np.log(1e-20)) / 2) < 1e-9


def hinge_input(device):
    x = random_blob((3, 5), low=-2, high=2, device=device)
    # Keep away from the hinge at |x| = 1 where the gradient jumps.
    near = (x.data.abs() - 1).abs() < 0.05
    x.data[near] *= 1.1
    return x


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_gradient(device, norm):
    layer = make_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', device=device)
    check_gradient(layer, [hinge_input(device), labels((3,), 5, device)], check_bottom=[0])


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_value(device, norm):
    layer = make_layer(f'type: "HingeLoss" hinge_loss_param {{ norm: {norm} }}', device=device)
    x = random_blob((2, 3), device=device, values=[[0.5, -2.0, 0.2], [0.3, 1.5, -0.5]])
    top = run(layer, [x, random_blob((2,), device=device, values=[0, 1])])
    margins = np.array([[0.5, 0, 1.2], [1.3, 0, 0.5]])   # max(0, 1 -/+ x)
    expected = (margins if norm == "L1" else margins ** 2).sum() / 2
    assert abs(float(top[0].data) - expected) < 1e-12


# -- EuclideanLoss, ContrastiveLoss ----------------------------------------------------------
def test_euclidean_gradient(device):
    layer = make_layer('type: "EuclideanLoss"', device=device)
    a = random_blob((2, 3, 2), device=device)
    b = random_blob((2, 6), low=-2, high=0, device=device)
    check_gradient(layer, [a, b], check_bottom=[0, 1])
    expected = ((a.data.reshape(2, 6) - b.data) ** 2).sum() / 4
    torch.testing.assert_close(run(layer, [a, b])[0].data, expected)


def test_euclidean_honours_propagate_down(device):
    layer = make_layer('type: "EuclideanLoss"', device=device)
    a, b = random_blob((2, 3), device=device), random_blob((2, 3), low=2, high=3, device=device)
    b.diff.fill_(7)
    layer.backward(run(layer, [a, b]), [True, False], [a, b])
    assert bool((b.diff == 7).all()) and float(a.diff.abs().sum()) > 0


def contrastive_bottom(device):
    a = random_blob((5, 3), device=device)
    b = random_blob((5, 3), device=device, generator=torch.Generator().manual_seed(9))
    b.data[4] += 3          # one dissimilar pair beyond the margin
    y = random_blob((5,), device=device, values=[1, 0, 0, 1, 0])
    return [a, b, y]


@pytest.mark.parametrize("legacy", ["false", "true"])
def test_contrastive_gradient(device, legacy):
    layer = make_layer(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 '
                       f'legacy_version: {legacy} }}', device=device)
    # Caffe divides by d + 1e-4 in the non-legacy gradient: close to, not exactly, the derivative.
    check_gradient(layer, contrastive_bottom(device), check_bottom=[0, 1],
                   threshold=1e-5 if legacy == "true" else 1e-3)


@pytest.mark.parametrize("legacy", [False, True])
def test_contrastive_value(device, legacy):
    layer = make_layer(f'type: "ContrastiveLoss" contrastive_loss_param {{ margin: 1.5 '
                       f'legacy_version: {str(legacy).lower()} }}', device=device)
    bottom = contrastive_bottom(device)
    d2 = ((bottom[0].data - bottom[1].data) ** 2).sum(1)
    apart = (1.5 - d2).clamp(min=0) if legacy else (1.5 - d2.sqrt()).clamp(min=0) ** 2
    expected = torch.where(bottom[2].data > 0, d2, apart).sum() / 10
    torch.testing.assert_close(run(layer, bottom)[0].data, expected)


# -- SigmoidCrossEntropyLoss -----------------------------------------------------------------
def targets(device, ignore):
    g = torch.Generator().manual_seed(4)
    t = torch.rand(2, 3, 2, generator=g, dtype=torch.float64)   # soft targets
    if ignore is not None:
        t.view(-1)[::4] = ignore
    return random_blob((2, 3, 2), device=device, values=t.numpy())


@pytest.mark.parametrize("normalization", NORMALIZATIONS)
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_xent_gradient(device, normalization, ignore):
    layer = make_layer(f'type: "SigmoidCrossEntropyLoss" loss_param {{ '
                       f'{loss_param(normalization, ignore)} }}', device=device)
    x = random_blob((2, 3, 2), low=-5, high=5, device=device)
    check_gradient(layer, [x, targets(device, ignore)], check_bottom=[0])


@pytest.mark.parametrize("param,divisor", [("", 2), ("loss_param { normalize: true }", 12),
                                           ("loss_param { normalization: FULL }", 12)])
def test_sigmoid_xent_matches_torch(device, param, divisor):
    layer = make_layer(f'type: "SigmoidCrossEntropyLoss" {param}', device=device)
    x = random_blob((2, 3, 2), low=-50, high=50, device=device)
    t = targets(device, None)
    expected = F.binary_cross_entropy_with_logits(x.data, t.data, reduction="sum") / divisor
    torch.testing.assert_close(run(layer, [x, t])[0].data, expected)


def test_sigmoid_xent_ignores_truncated_targets(device):
    # Caffe compares int(target) with ignore_label: 0.7 counts as 0.
    layer = make_layer('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 0 '
                       'normalization: VALID }', device=device)
    x = random_blob((1, 3), device=device, values=[[0.3, -1.0, 2.0]])
    t = random_blob((1, 3), device=device, values=[[0.7, 1.0, 0.0]])
    expected = F.binary_cross_entropy_with_logits(x.data[0, 1], t.data[0, 1])
    torch.testing.assert_close(run(layer, [x, t])[0].data, expected)


# -- Accuracy --------------------------------------------------------------------------------
# Ties count against the true class: row 2 (label 0, tied second) is a top-3 hit only.
SCORES = [[0.1, 0.5, 0.2, 0.2],     # label 1: best          -> top-1 hit
          [0.4, 0.3, 0.2, 0.1],     # label 2: third         -> top-3 hit
          [0.2, 0.2, 0.5, 0.1],     # label 0: tied second   -> top-3 hit
          [0.3, 0.1, 0.1, 0.5],     # label 3: best          -> top-1 hit
          [0.6, 0.1, 0.2, 0.1]]     # label 2: second        -> top-2 hit
LABELS = [1, 2, 0, 3, 2]


@pytest.mark.parametrize("top_k,expected", [(1, 2 / 5), (2, 3 / 5), (3, 5 / 5), (4, 1.0)])
def test_accuracy_top_k(device, top_k, expected):
    layer = make_layer(f'type: "Accuracy" accuracy_param {{ top_k: {top_k} }}', device=device)
    x, y = random_blob((5, 4), device=device, values=SCORES), random_blob((5,), device=device,
                                                                            values=LABELS)
    assert abs(float(run(layer, [x, y])[0].data) - expected) < 1e-12


def test_accuracy_ignore_and_per_class(device):
    layer = make_layer('type: "Accuracy" accuracy_param { ignore_label: 3 }', device=device)
    x, y = random_blob((5, 4), device=device, values=SCORES), random_blob((5,), device=device,
                                                                            values=LABELS)
    top = run(layer, [x, y], num_tops=2)
    assert abs(float(top[0].data) - 1 / 4) < 1e-12
    # class 0: 0/1, class 1: 1/1, class 2: 0/2, class 3: ignored, so 0 by convention
    np.testing.assert_allclose(top[1].data_numpy(), [0, 1, 0, 0])


def test_accuracy_spatial_axis(device):
    layer = make_layer('type: "Accuracy"', device=device)
    x = random_blob((2, 3, 2, 2), device=device)
    y = labels((2, 1, 2, 2), 3, device)
    top = run(layer, [x, y], num_tops=2)
    hit = x.data.argmax(1) == y.data[:, 0].long()
    assert abs(float(top[0].data) - float(hit.double().mean())) < 1e-12
    assert top[1].shape == (3,)


def test_accuracy_all_ignored_is_zero(device):
    layer = make_layer('type: "Accuracy" accuracy_param { ignore_label: 0 }', device=device)
    x, y = random_blob((2, 3), device=device), random_blob((2,), device=device, values=[0, 0])
    assert float(run(layer, [x, y])[0].data) == 0


def test_accuracy_has_no_forced_backward():
    assert not make_layer('type: "Accuracy"').allow_force_backward(0)


def test_accuracy_top_k_beyond_classes(device):
    layer = make_layer('type: "Accuracy" accuracy_param { top_k: 5 }', device=device)
    with pytest.raises(LayerSetupError, match="top_k"):
        setup(layer, [random_blob((2, 4), device=device), labels((2,), 4, device)])


# -- bad input -------------------------------------------------------------------------------
LABELLED = ['type: "SoftmaxWithLoss"', 'type: "Accuracy"', 'type: "MultinomialLogisticLoss"',
            'type: "HingeLoss"', 'type: "InfogainLoss"']


def labelled_bottom(text, device, label_values):
    x = random_blob((3, 4), low=0.1, high=1, device=device)
    bottom = [x, random_blob((3,), device=device, values=label_values)]
    if "Infogain" in text:
        bottom.append(infogain_matrix(4, device))
    return bottom


@pytest.mark.parametrize("text", LABELLED)
@pytest.mark.parametrize("bad", [4, -1, float("nan")])
def test_label_out_of_range(device, text, bad):
    layer = make_layer(text, device=device)
    bottom = labelled_bottom(text, device, [0, bad, 2])
    top = setup(layer, bottom, 1)
    with pytest.raises(CaffeError, match=r"layer 'layer'.*label (4|-1|nan) at position 1"):
        layer.forward(bottom, top)


@pytest.mark.parametrize("text", ['type: "SoftmaxWithLoss" loss_param { ignore_label: 255 }',
                                  'type: "Accuracy" accuracy_param { ignore_label: 255 }'])
def test_ignore_label_may_lie_outside_the_classes(device, text):
    layer = make_layer(text, device=device)
    bottom = labelled_bottom(text, device, [0, 255, 3])
    layer.forward(bottom, setup(layer, bottom))


@pytest.mark.parametrize("text", LABELLED + ['type: "SigmoidCrossEntropyLoss"',
                                             'type: "EuclideanLoss"'])
def test_mismatched_counts(device, text):
    layer = make_layer(text, device=device)
    bottom = [random_blob((3, 4), device=device), random_blob((3, 2), device=device)]
    if "Infogain" in text:
        bottom.append(infogain_matrix(4, device))
    with pytest.raises(LayerSetupError):
        setup(layer, bottom)


@pytest.mark.parametrize("text", LABELLED[:1] + ['type: "EuclideanLoss"'])
def test_mismatched_batch(device, text):
    layer = make_layer(text, device=device)
    bottom = [random_blob((4, 3), device=device), random_blob((3, 4), device=device)]
    with pytest.raises(LayerSetupError, match="first dimension|labels"):
        setup(layer, bottom)


def test_contrastive_needs_one_label_per_pair(device):
    layer = make_layer('type: "ContrastiveLoss"', device=device)
    bottom = contrastive_bottom(device)[:2] + [random_blob((4,), device=device)]
    with pytest.raises(LayerSetupError, match="one similarity label per pair"):
        setup(layer, bottom)


def test_no_backward_to_labels(device):
    layer = make_layer('type: "SoftmaxWithLoss"', device=device)
    bottom = [random_blob((3, 4), device=device), labels((3,), 4, device)]
    top = run(layer, bottom)
    with pytest.raises(CaffeError, match="cannot backpropagate to label"):
        layer.backward(top, [True, True], bottom)
    assert not layer.allow_force_backward(1) and layer.allow_force_backward(0)


# -- in a net --------------------------------------------------------------------------------
NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 4 } } }
layer { name: "y" type: "Input" top: "y" input_param { shape { dim: 3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "y" top: "loss" top: "prob" }
layer { name: "acc" type: "Accuracy" bottom: "x" bottom: "y" top: "acc" }
"""


def test_loss_in_a_net(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    net = caffe.Net(str(path), caffe.TRAIN, dtype=torch.float64)
    x = np.random.RandomState(0).randn(3, 4)
    net.blobs["x"].data[...] = x
    net.blobs["y"].data[...] = [0, 3, 1]
    out = net.forward()
    expected = F.cross_entropy(torch.from_numpy(x), torch.tensor([0, 3, 1]))
    assert abs(float(out["loss"]) - float(expected)) < 1e-12
    net.backward()
    grad = torch.softmax(torch.from_numpy(x), 1) - F.one_hot(torch.tensor([0, 3, 1]), 4)
    np.testing.assert_allclose(net.blobs["x"].diff, grad.numpy() / 3, atol=1e-12)
    assert not net.blobs["y"].diff.any()
