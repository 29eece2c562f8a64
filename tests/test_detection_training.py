"""Training the detection forks' nets on a tiny synthetic set (one coloured box per image):
an SSD net (MultiBoxLoss) and a Fast/Faster R-CNN head (ROIPooling, SmoothL1Loss with
inside/outside weights); the loss falls and a snapshot resumes where it left off."""
import numpy as np
import pytest
import torch

from caffe.formats import parse_text
from caffe.proto import caffe_pb2
from caffe.solvers import get_solver

COLOURS = {1: (1.0, -1.0, -1.0), 2: (-1.0, -1.0, 1.0)}    # class 1 red boxes, class 2 blue


def synthetic_batch(rng, n=4, size=32):
    """Images with one box each and the SSD label rows (item, label, 0, box, difficult 0)."""
    images = rng.uniform(-0.2, 0.2, (n, 3, size, size)).astype(np.float32)
    rows = []
    for i in range(n):
        label = int(rng.randint(1, 3))
        w, h = rng.randint(8, 20, 2)
        x0, y0 = rng.randint(0, size - w), rng.randint(0, size - h)
        images[i, :, y0:y0 + h, x0:x0 + w] += np.array(COLOURS[label])[:, None, None]
        rows.append([i, label, 0, x0 / size, y0 / size, (x0 + w) / size, (y0 + h) / size, 0])
    return images, np.array(rows, np.float32).reshape(1, 1, n, 8)


def conv(name, bottom, n, k=3, s=1, relu=True):
    text = (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {k // 2} '
            f'weight_filler {{ type: "xavier" }} bias_filler {{ type: "constant" }} }} }}\n')
    if relu:
        text += f'layer {{ name: "{name}_relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


def ssd_train_net(n=4):
    text = (f'name: "tiny_ssd"\nlayer {{ name: "input" type: "Input" top: "data" top: "label" '
            f'input_param {{ shape {{ dim: {n} dim: 3 dim: 32 dim: 32 }} '
            f'shape {{ dim: 1 dim: 1 dim: {n} dim: 8 }} }} }}\n')
    text += conv("conv1", "data", 16, s=2) + conv("conv2", "conv1", 32, s=2) + \
        conv("conv3", "conv2", 32, s=2)
    locs, confs, priors = [], [], []
    for src, size in (("conv2", 10), ("conv3", 18)):
        for kind, out, m in (("loc", locs, 4 * 3), ("conf", confs, 3 * 3)):
            name = f"{src}_{kind}"
            text += conv(name, src, m, relu=False)
            text += (f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" '
                     f'top: "{name}_perm" '
                     f'permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}\n'
                     f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" '
                     f'top: "{name}_flat" flatten_param {{ axis: 1 }} }}\n')
            out.append(f"{name}_flat")
        text += (f'layer {{ name: "{src}_prior" type: "PriorBox" bottom: "{src}" bottom: "data" '
                 f'top: "{src}_prior" prior_box_param {{ min_size: {size} aspect_ratio: 2 '
                 f'flip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }} }}\n')
        priors.append(f"{src}_prior")
    for name, blobs, axis in (("mbox_loc", locs, 1), ("mbox_conf", confs, 1),
                              ("mbox_prior", priors, 2)):
        text += (f'layer {{ name: "{name}" type: "Concat" '
                 + " ".join(f'bottom: "{b}"' for b in blobs)
                 + f' top: "{name}" concat_param {{ axis: {axis} }} }}\n')
    text += ('layer { name: "mbox_loss" type: "MultiBoxLoss" bottom: "mbox_loc" '
             'bottom: "mbox_conf" bottom: "mbox_prior" bottom: "label" top: "mbox_loss" '
             'propagate_down: true propagate_down: true propagate_down: false '
             'propagate_down: false loss_param { normalization: VALID } multibox_loss_param { '
             'loc_loss_type: SMOOTH_L1 conf_loss_type: SOFTMAX loc_weight: 1 num_classes: 3 '
             'share_location: true match_type: PER_PREDICTION overlap_threshold: 0.5 '
             'use_prior_for_matching: true background_label_id: 0 use_difficult_gt: true '
             'neg_pos_ratio: 3 neg_overlap: 0.5 code_type: CENTER_SIZE mining_type: '
             'MAX_NEGATIVE } }\n')
    return text


def rcnn_train_net(n=4, rois=8):
    """Fast R-CNN head: ROIs pooled from a conv map, class scores and per-class box offsets."""
    text = (f'name: "tiny_fast_rcnn"\nlayer {{ name: "input" type: "Input" top: "data" '
            f'top: "rois" top: "labels" top: "targets" top: "inside" top: "outside" '
            f'input_param {{ shape {{ dim: {n} dim: 3 dim: 32 dim: 32 }} '
            f'shape {{ dim: {rois} dim: 5 }} shape {{ dim: {rois} }} '
            + " ".join([f'shape {{ dim: {rois} dim: 12 }}'] * 3) + " } }\n")
    text += conv("conv1", "data", 16) + conv("conv2", "conv1", 16, s=2)
    text += ('layer { name: "roi_pool" type: "ROIPooling" bottom: "conv2" bottom: "rois" '
             'top: "pool" roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 0.5 } }\n'
             'layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
             'inner_product_param { num_output: 32 weight_filler { type: "xavier" } } }\n'
             'layer { name: "fc_relu" type: "ReLU" bottom: "fc" top: "fc" }\n'
             'layer { name: "cls" type: "InnerProduct" bottom: "fc" top: "cls" '
             'inner_product_param { num_output: 3 '
             'weight_filler { type: "gaussian" std: 0.01 } } }\n'
             'layer { name: "bbox" type: "InnerProduct" bottom: "fc" top: "bbox" '
             'inner_product_param { num_output: 12 '
             'weight_filler { type: "gaussian" std: 0.001 } } }\n'
             'layer { name: "loss_cls" type: "SoftmaxWithLoss" bottom: "cls" bottom: "labels" '
             'top: "loss_cls" }\n'
             'layer { name: "loss_bbox" type: "SmoothL1Loss" bottom: "bbox" bottom: "targets" '
             'bottom: "inside" bottom: "outside" top: "loss_bbox" '
             'smooth_l1_loss_param { sigma: 3 } }\n')
    return text


def rcnn_batch(rng, n=4, rois=8):
    """ROIs around each image's box: jittered positives (class, offsets) and background."""
    images, gt = synthetic_batch(rng, n)
    gt = gt.reshape(-1, 8)
    boxes = np.zeros((rois, 5), np.float32)
    labels = np.zeros(rois, np.float32)
    targets, inside = np.zeros((rois, 12), np.float32), np.zeros((rois, 12), np.float32)
    for r in range(rois):
        i = r % n
        x0, y0, x1, y1 = gt[i, 3:7] * 32
        if r < n:          # a positive: the box, jittered
            j = rng.uniform(-2, 2, 4)
            boxes[r] = [i, x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]]
            c = int(gt[i, 1])
            labels[r] = c
            w, h = x1 - x0, y1 - y0
            targets[r, 4 * c:4 * c + 4] = [-j[0] / w, -j[1] / h, -j[2] / w, -j[3] / h]
            inside[r, 4 * c:4 * c + 4] = 1
        else:              # background: a corner patch
            boxes[r] = [i, 0, 0, 6, 6]
    return {"data": images, "rois": boxes, "labels": labels, "targets": targets,
            "inside": inside, "outside": inside / max(1, n)}


def make(net_text, prefix, lr):
    param = parse_text(f'base_lr: {lr} lr_policy: "fixed" momentum: 0.9 weight_decay: 0.0005 '
                       f'max_iter: 1000 snapshot_prefix: "{prefix}" random_seed: 3',
                       caffe_pb2.SolverParameter())
    parse_text(net_text, param.net_param)
    return get_solver(param, dtype=torch.float32)


def train(solver, feeds, steps, loss_names):
    losses = []
    for k in range(steps):
        for name, value in feeds(k).items():
            solver.net.blobs[name].data[...] = value
        solver.step(1)
        losses.append(sum(float(solver.net.blobs[b].data) for b in loss_names))
    return losses


def ssd_feeds(k):
    images, label = synthetic_batch(np.random.RandomState(k % 8))
    return {"data": images, "label": label}


def rcnn_feeds(k):
    return rcnn_batch(np.random.RandomState(k % 8))


@pytest.mark.parametrize("net, feeds, lr, losses", [
    (ssd_train_net, ssd_feeds, 0.01, ["mbox_loss"]),
    (rcnn_train_net, rcnn_feeds, 0.03, ["loss_cls", "loss_bbox"]),
], ids=["ssd", "fast_rcnn"])
def test_loss_falls_and_snapshot_resumes(tmp_path, net, feeds, lr, losses):
    solver = make(net(), tmp_path / "run", lr)
    history = train(solver, feeds, 40, losses)
    first, last = np.mean(history[:8]), np.mean(history[-8:])
    assert last < 0.6 * first, f"loss {first:.3f} -> {last:.3f}"
    solver.snapshot()
    state = tmp_path / "run_iter_40.solverstate"
    assert state.exists()
    more = train(solver, lambda k: feeds(k + 40), 3, losses)
    resumed = make(net(), tmp_path / "again", lr)
    resumed.restore(str(state))
    assert resumed.iter == 40
    again = train(resumed, lambda k: feeds(k + 40), 3, losses)
    np.testing.assert_allclose(again, more, rtol=1e-5)
