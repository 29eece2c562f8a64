"""Record the forks' golden cases: run each case's net in a fork's own pycaffe (or OpenCV dnn
for the community layers) and save what it computes, in ../shared/golden/layers' format.

    PYTHONPATH=/opt/pspnet/src/python python tests/golden_forks/record.py pspnet [CASE ...]
    PYTHONPATH=/opt/segnet/src/python python tests/golden_forks/record.py segnet
    python tests/golden_forks/record.py opencv        # needs cv2 and pycaffe (this project)

A case is a net: net-level inputs (the forks have no Input layer), any helper layers, and the layer
under test named "layer" with tops t0, t1, ...; force_backward. The weights are saved before
the forward pass (BN's running statistics change in it); golden.npz holds in/<input>,
out/t<i>, and in TRAIN topdiff/t<i>, indiff/<input>, param/<i> (after forward), paramdiff/<i>.
This file is not imported by the tests; it needs the fork built (not part of this project).
"""
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# Net-level inputs: the forks predate the Input layer.
IN = 'input: "{0}" {1}\n'
FILL = 'type: "uniform" min: -1 max: 1'


def shape(*dims):
    return " ".join(f"input_dim: {d}" for d in dims)


def case(inputs, layer, phase="TRAIN", tops=1, helpers="", labels=(), stats=False, fixed=None,
         random_blobs=False):
    """inputs: {name: dims}; layer: the body of layer "layer" (bottoms included)."""
    text = "force_backward: true\n" + "".join(IN.format(n, shape(*d)) for n, d in inputs.items())
    text += helpers
    text += 'layer { name: "layer" %s %s }\n' % (" ".join(f'top: "t{i}"' for i in range(tops)),
                                                 layer)
    return dict(net=text, inputs=inputs, phase=phase, labels=set(labels), tops=tops, stats=stats,
                fixed=fixed or {}, random_blobs=random_blobs)


X = {"x": (2, 3, 5, 6)}
PSP_BN = f'bn_param {{ slope_filler {{ {FILL} }} bias_filler {{ {FILL} }} momentum: 0.7 %s }}'
SEG_BN = f'bn_param {{ bn_mode: %s scale_filler {{ {FILL} }} shift_filler {{ {FILL} }} }}'
POOL = ('layer { name: "pool" type: "Pooling" bottom: "x" top: "p" top: "mask" '
        'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
SCORES = {"x": (2, 4, 3, 5), "label": (2, 1, 3, 5)}
CRF_IN = {"x": (1, 3, 9, 11), "dim": (1, 1, 1, 2), "image": (1, 3, 9, 11)}
CRF = ('type: "DenseCRF" bottom: "x" bottom: "dim" %s dense_crf_param { max_iter: %d '
       'pos_xy_std: 3 pos_w: 3 %s }')
BILATERAL = "bi_xy_std: 5 bi_rgb_std: 0.2 bi_w: 4"

CASES = {
    "pspnet": {
        "interp_zoom": case(X, 'type: "Interp" bottom: "x" interp_param { zoom_factor: 3 }'),
        "interp_shrink": case(X, 'type: "Interp" bottom: "x" interp_param { shrink_factor: 2 }'),
        "interp_size": case(X, 'type: "Interp" bottom: "x" interp_param { height: 4 width: 9 }'),
        "interp_zoom_shrink": case(X, 'type: "Interp" bottom: "x" interp_param { '
                                      'zoom_factor: 3 shrink_factor: 2 }'),
        "interp_crop": case(X, 'type: "Interp" bottom: "x" interp_param { zoom_factor: 2 '
                               'pad_beg: -1 pad_end: -1 }'),
        "bn_psp_train": case(X, 'type: "BN" bottom: "x" ' + PSP_BN % ""),
        "bn_psp_frozen": case(X, 'type: "BN" bottom: "x" ' + PSP_BN % "frozen: true",
                              stats=True),
        "bn_psp_test": case(X, 'type: "BN" bottom: "x" ' + PSP_BN % "eps: 0.001", "TEST",
                            stats=True),
        # The fork's DenseCRF reads a third bottom unconditionally (a crash with two), so
        # its cases all have the image and bilateral kernels; and it reads item 0's image
        # for every item, so they hold one item.
        "densecrf_bilateral": case(CRF_IN, CRF % ('bottom: "image"', 5, BILATERAL), "TEST",
                                   fixed={"dim": [9, 11]}),
        "densecrf_log_crop": case(CRF_IN, CRF % ('bottom: "image"', 3, BILATERAL +
                                                 " output_probability: false"), "TEST",
                                  fixed={"dim": [7, 8]}),
        "seg_accuracy": case(SCORES, 'type: "SegAccuracy" bottom: "x" bottom: "label"',
                             "TEST", labels=["label"]),
        "seg_accuracy_ignore": case(SCORES, 'type: "SegAccuracy" bottom: "x" bottom: "label" '
                                    'seg_accuracy_param { ignore_label: 1 ignore_label: 3 }',
                                    "TEST", labels=["label"]),
    },
    "segnet": {
        "bn_segnet_learn": case(X, 'type: "BN" bottom: "x" ' + SEG_BN % "LEARN", tops=3),
        "bn_segnet_inference": case(X, 'type: "BN" bottom: "x" ' + SEG_BN % "INFERENCE"),
        "upsample_scale": case({"x": (2, 3, 6, 8)}, 'type: "Upsample" bottom: "p" bottom: "mask" '
                               'upsample_param { scale: 2 }', helpers=POOL),
        "upsample_size": case({"x": (2, 3, 5, 7)}, 'type: "Upsample" bottom: "p" bottom: "mask" '
                              'upsample_param { upsample_h: 5 upsample_w: 7 }',
                              helpers=POOL.replace("stride: 2 }", "stride: 2 }")),
        "upsample_pad_out": case({"x": (2, 3, 5, 7)}, 'type: "Upsample" bottom: "p" '
                                 'bottom: "mask" upsample_param { scale: 2 pad_out_h: true '
                                 'pad_out_w: true }', helpers=POOL),
    },
    # Run in a folder holding spatial.par and bilateral.par (3 numbers each): the fork reads
    # its initial kernel weights from there; the recorder then draws all three blobs.
    "crfasrnn": {
        "meanfield": case({"u": (1, 3, 5, 6), "q": (1, 3, 5, 6), "image": (1, 3, 5, 6)},
                          'type: "MultiStageMeanfield" bottom: "u" bottom: "q" bottom: "image" '
                          'multi_stage_meanfield_param { num_iterations: 3 theta_alpha: 3 '
                          'theta_beta: 0.5 theta_gamma: 2 }', random_blobs=True),
    },
    # Forward only, through OpenCV dnn (weights written by this project, read by OpenCV).
    "opencv": {
        "conv_depthwise": case({"x": (2, 4, 6, 5)}, 'type: "ConvolutionDepthwise" bottom: "x" '
                               'convolution_param { num_output: 4 kernel_size: 3 pad: 1 '
                               f'stride: 2 weight_filler {{ {FILL} }} bias_filler {{ {FILL} }} }}',
                               "TEST"),
        "depthwise_convolution": case({"x": (2, 3, 5, 5)}, 'type: "DepthwiseConvolution" '
                                      'bottom: "x" convolution_param { num_output: 3 '
                                      f'kernel_size: 3 weight_filler {{ {FILL} }} '
                                      'bias_term: false }', "TEST"),
        "shuffle_channel": case({"x": (2, 6, 3, 4)}, 'type: "ShuffleChannel" bottom: "x" '
                                'shuffle_channel_param { group: 3 }', "TEST"),
        "reorg": case({"x": (2, 4, 6, 4)}, 'type: "Reorg" bottom: "x" reorg_param { stride: 2 }',
                      "TEST"),
        "interp_opencv": case(X, 'type: "Interp" bottom: "x" interp_param { zoom_factor: 3 }',
                              "TEST"),
    },
}


def record_opencv(name, spec):
    import cv2
    import caffe
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(spec["net"])
    (folder / "phase").write_text("TEST\n")
    caffe.set_random_seed(1701)
    caffe.Net(str(folder / "net.prototxt"), caffe.TEST).save(str(folder / "weights.caffemodel"))
    # OpenCV knows the depthwise layer by one of its two names only.
    text = spec["net"].replace('"DepthwiseConvolution"', '"ConvolutionDepthwise"')
    net = cv2.dnn.readNetFromCaffe(bytearray(text.encode()),
                                   bytearray((folder / "weights.caffemodel").read_bytes()))
    rng = np.random.default_rng(sum(map(ord, name)))
    out = {f"in/{k}": v for k, v in inputs(spec, rng).items()}
    for k, v in out.items():
        net.setInput(v, k[3:])
    out["out/t0"] = net.forward("layer")
    np.savez_compressed(folder / "golden.npz", **out)
    print("recorded", name, "with OpenCV", cv2.__version__)


def inputs(spec, rng):
    values = {}
    for name, dims in spec["inputs"].items():
        if name in spec.get("fixed", {}):
            values[name] = np.asarray(spec["fixed"][name], np.float32).reshape(dims)
        elif name in spec["labels"]:
            values[name] = rng.integers(0, 4, dims).astype(np.float32)
        else:
            values[name] = rng.uniform(-1, 1, dims).astype(np.float32)
    return values


def record_caffe(name, spec, caffe):
    folder = HERE / name
    folder.mkdir(exist_ok=True)
    (folder / "net.prototxt").write_text(spec["net"])
    (folder / "phase").write_text(spec["phase"] + "\n")
    phase = caffe.TRAIN if spec["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net(str(folder / "net.prototxt"), phase)
    rng = np.random.default_rng(sum(map(ord, name)))
    if spec.get("random_blobs"):   # CRF-RNN's kernel weights and compatibility, random
        for blob in net.params["layer"]:
            blob.data[...] = rng.uniform(-1, 1, blob.data.shape)
    if spec.get("stats"):      # BN's running statistics: not zero, variance positive
        for i, blob in enumerate(net.params["layer"][2:]):
            blob.data[...] = rng.uniform(0.5, 1.5, blob.data.shape) if i else \
                rng.uniform(-0.5, 0.5, blob.data.shape)
    net.save(str(folder / "weights.caffemodel"))
    out = {}
    for k, v in inputs(spec, rng).items():
        net.blobs[k].data[...] = v
        out[f"in/{k}"] = v
    net.forward()
    tops = [f"t{i}" for i in range(spec["tops"])]
    for i, t in enumerate(tops):
        out[f"out/t{i}"] = net.blobs[t].data.copy()
    params = net.params["layer"] if "layer" in net.params else []
    if phase == caffe.TRAIN:
        for i, t in enumerate(tops):
            out[f"topdiff/t{i}"] = rng.uniform(-1, 1, net.blobs[t].data.shape).astype(np.float32)
            net.blobs[t].diff[...] = out[f"topdiff/t{i}"]
        for blobs in net.params.values():
            for b in blobs:
                b.diff[...] = 0
        net.backward()
        for k in spec["inputs"]:
            if k not in spec["labels"] and k != "image":   # images get no gradient
                out[f"indiff/{k}"] = net.blobs[k].diff.copy()
        for i, b in enumerate(params):
            out[f"param/{i}"] = b.data.copy()
            out[f"paramdiff/{i}"] = b.diff.copy()
    np.savez_compressed(folder / "golden.npz", **out)
    print("recorded", name, sorted(out))


def main():
    fork, names = sys.argv[1], sys.argv[2:]
    if fork == "opencv":
        for name, spec in CASES[fork].items():
            if not names or name in names:
                record_opencv(name, spec)
        return
    import caffe
    caffe.set_mode_cpu()
    for name, spec in CASES[fork].items():
        if not names or name in names:
            record_caffe(name, spec, caffe)



# -- whole nets ------------------------------------------------------------------------
# Step 1, in this project:   python record.py prepare-models   (prototxt, seeded weights,
# input under /tmp/fork_models/<model>/); step 2, in the reference:
#   PYTHONPATH=/opt/pspnet/src/python python record.py run-models pspnet
#   python record.py run-models opencv
# writes tests/golden_forks/models/<model>.npz: the reference's outputs, strided.
MODELS = {  # model: (generator call, reference, outputs kept -> stride)
    "pspnet50": ("pspnet(41, 21, 50)", "pspnet", {"conv6": 1, "conv6_interp": 4}),
    "pspnet101": ("pspnet(41, 21, 101)", "pspnet", {"conv6": 1, "conv6_interp": 4}),
    "deeplab_largefov": ("deeplab_largefov(65, 21)", "opencv", {"fc8": 1, "fc8_interp": 4}),
    "segnet": ("segnet(64, 12)", "segnet", {"conv1_1_D": 4, "prob": 4}),
}
WORK = Path("/tmp/fork_models")


def prepare_models():
    sys.path.insert(0, str(HERE.parents[1]))
    from tests import fork_nets
    for name, (call, _, _) in MODELS.items():
        folder = WORK / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "net.prototxt").write_text(eval("fork_nets." + call))
        net = fork_nets.seeded_weights(str(folder / "net.prototxt"), folder / "weights.caffemodel")
        np.save(folder / "input.npy", fork_nets.seeded_input(net.blobs["data"].data.shape))
        print("prepared", name)


def run_models(reference):
    out_dir = HERE / "models"
    out_dir.mkdir(exist_ok=True)
    for name, (_, ref, keep) in MODELS.items():
        if ref != reference:
            continue
        folder = WORK / name
        x = np.load(folder / "input.npy")
        if reference == "opencv":
            import cv2
            net = cv2.dnn.readNetFromCaffe(str(folder / "net.prototxt"),
                                           str(folder / "weights.caffemodel"))
            net.setInput(x, "data")
            outs = dict(zip(keep, net.forward(list(keep))))
        else:
            import caffe
            caffe.set_mode_cpu()
            net = caffe.Net(str(folder / "net.prototxt"), str(folder / "weights.caffemodel"),
                            caffe.TEST)
            net.blobs["data"].data[...] = x
            net.forward()
            outs = {k: net.blobs[k].data for k in keep}
        np.savez_compressed(out_dir / f"{name}.npz", **{
            k: outs[k][:, :, ::s, ::s].copy() for k, s in keep.items()})
        print("recorded", name, {k: outs[k].shape for k in keep}, "with", reference)


if __name__ == "__main__":
    if sys.argv[1] == "prepare-models":
        prepare_models()
    elif sys.argv[1] == "run-models":
        run_models(sys.argv[2])
    else:
        main()
