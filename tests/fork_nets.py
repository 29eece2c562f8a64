"""The forks' segmentation deploy nets, generated at any input size (and class count), with
the published deploy prototxts' layer names and settings: PSPNet-50/101 (hszhao/PSPNet's
evaluation/prototxt), DeepLab-LargeFOV (DeepLab v1/v2's VGG-16 test net) and SegNet
(SegNet-Tutorial's segnet_inference). The published files fix the input size (473, 713,
...); these let tests run the same structure small. Weights come from seeded_weights(): the
same numbers on every machine, so a fork's recorded output can be checked anywhere.
"""
import numpy as np

import caffe
from caffe.proto import caffe_pb2


class _Net:
    def __init__(self, name, size, channels=3):
        # Net-level input, as the published files have it (the forks predate Input layers).
        self.lines = [f'name: "{name}"\ninput: "data"\ninput_dim: 1\ninput_dim: {channels}\n'
                      f'input_dim: {size}\ninput_dim: {size}']

    def add(self, name, kind, bottom, top=None, body="", tops=()):
        bottoms = [bottom] if isinstance(bottom, str) else bottom
        top = top or name
        self.lines.append(f'layer {{ name: "{name}" type: "{kind}" '
                          + "".join(f'bottom: "{b}" ' for b in bottoms)
                          + "".join(f'top: "{t}" ' for t in [top, *tops]) + body + " }")
        return top

    def conv(self, name, bottom, out, k, s=1, p=0, d=1, bias=False, top=None):
        dil = f" dilation: {d}" if d > 1 else ""
        return self.add(name, "Convolution", bottom, top, f"convolution_param {{ num_output: {out}"
                        f" kernel_size: {k} stride: {s} pad: {p}{dil}"
                        f"{'' if bias else ' bias_term: false'} }}")

    def text(self):
        return "\n".join(self.lines) + "\n"


def _psp_unit(net, name, bottom, out, k=1, s=1, p=0, d=1, relu=True):
    top = net.conv(name, bottom, out, k, s, p, d)
    net.add(f"{name}/bn", "BN", top, top, 'bn_param { slope_filler { type: "constant" value: 1 }'
            ' bias_filler { type: "constant" value: 0 } momentum: 0.95 frozen: true }')
    if relu:
        net.add(f"{name}/relu", "ReLU", top, top)
    return top


def pspnet(size=473, classes=150, depth=50, bins=(1, 2, 3, 6)):
    """PSPNet-50/101: dilated ResNet (deep stem), pyramid pooling, x8 Interp. size = 8k + 1."""
    feat = (size - 1) // 8 + 1
    if (size - 1) % 8 or any(feat % b for b in bins):
        raise ValueError(f"input {size}: the {feat} x {feat} feature map must split into "
                         f"bins {bins}")
    net = _Net(f"pspnet{depth}", size)
    x = _psp_unit(net, "conv1_1_3x3_s2", "data", 64, 3, 2, 1)
    x = _psp_unit(net, "conv1_2_3x3", x, 64, 3, 1, 1)
    x = _psp_unit(net, "conv1_3_3x3", x, 128, 3, 1, 1)
    x = net.add("pool1_3x3_s2", "Pooling", x, body="pooling_param { pool: MAX kernel_size: 3 "
                "stride: 2 pad: 1 }")
    blocks = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512)), 2):
        dilation = {4: 2, 5: 4}.get(stage, 1)
        for i in range(1, count + 1):
            name = f"conv{stage}_{i}"
            stride = 2 if stage == 3 and i == 1 else 1
            # PSPNet-50 strides in the 1x1 reduction, PSPNet-101 in the 3x3.
            s1, s3 = (stride, 1) if depth == 50 else (1, stride)
            r = _psp_unit(net, f"{name}_1x1_reduce", x, width, 1, s1)
            r = _psp_unit(net, f"{name}_3x3", r, width, 3, s3, dilation, dilation)
            r = _psp_unit(net, f"{name}_1x1_increase", r, 4 * width, relu=False)
            short = _psp_unit(net, f"{name}_1x1_proj", x, 4 * width, 1, stride, relu=False) \
                if i == 1 else x
            x = net.add(name, "Eltwise", [short, r], body="eltwise_param { operation: SUM }")
            net.add(f"{name}/relu", "ReLU", x, x)
    branches = [x]
    for b in reversed(bins):
        k = feat // b
        pool = net.add(f"{x}_pool{b}", "Pooling", x, body=f"pooling_param {{ pool: AVE "
                       f"kernel_size: {k} stride: {k} }}")
        conv = _psp_unit(net, f"{pool}_conv", pool, 512)
        branches.append(net.add(f"{pool}_interp", "Interp", conv,
                                body=f"interp_param {{ height: {feat} width: {feat} }}"))
    cat = net.add(f"{x}_concat", "Concat", branches)
    y = _psp_unit(net, "conv5_4", cat, 512, 3, 1, 1)
    net.add("conv5_4/dropout", "Dropout", y, y, "dropout_param { dropout_ratio: 0.1 }")
    y = net.conv("conv6", y, classes, 1, bias=True)
    net.add("conv6_interp", "Interp", y, body="interp_param { zoom_factor: 8 }")
    return net.text()


def deeplab_largefov(size=321, classes=21):
    """DeepLab-LargeFOV: VGG-16, pool4/pool5 with stride 1, conv5 dilation 2, fc6 3x3
    dilation 12 (1024), fc7, fc8 and a x8 Interp."""
    net = _Net("deeplab_largefov", size)
    x = "data"
    for stage, (count, width) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)), 1):
        d = 2 if stage == 5 else 1
        for i in range(1, count + 1):
            x = net.conv(f"conv{stage}_{i}", x, width, 3, 1, d, d, bias=True)
            net.add(f"relu{stage}_{i}", "ReLU", x, x)
        stride = 2 if stage <= 3 else 1
        x = net.add(f"pool{stage}", "Pooling", x, body=f"pooling_param {{ pool: MAX "
                    f"kernel_size: 3 stride: {stride} pad: 1 }}")
    x = net.conv("fc6", x, 1024, 3, 1, 12, 12, bias=True)
    for fc in ("fc6", "fc7"):
        if fc == "fc7":
            x = net.conv("fc7", x, 1024, 1, bias=True)
        net.add(f"relu{fc[2:]}", "ReLU", x, x)
        net.add(f"drop{fc[2:]}", "Dropout", x, x, "dropout_param { dropout_ratio: 0.5 }")
    x = net.conv("fc8", x, classes, 1, bias=True)
    net.add("fc8_interp", "Interp", x, body="interp_param { zoom_factor: 8 }")
    return net.text()


def segnet(size=64, classes=12):
    """SegNet (inference form): VGG-16 encoder with BN, max pooling with masks, mirrored
    decoder of Upsample (by those masks) + conv/BN/ReLU, a final classifier and Softmax.
    size divisible by 32."""
    if size % 32:
        raise ValueError(f"SegNet's five poolings need an input divisible by 32, got {size}")
    net = _Net("segnet", size)
    bn = 'bn_param { bn_mode: INFERENCE }'
    plan = list(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)))
    x = "data"
    for stage, (count, width) in enumerate(plan, 1):
        for i in range(1, count + 1):
            x = net.conv(f"conv{stage}_{i}", x, width, 3, 1, 1, bias=True)
            net.add(f"conv{stage}_{i}_bn", "BN", x, x, bn)
            net.add(f"relu{stage}_{i}", "ReLU", x, x)
        x = net.add(f"pool{stage}", "Pooling", x, tops=[f"pool{stage}_mask"],
                    body="pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    for stage in range(5, 0, -1):
        count, width = plan[stage - 1]
        x = net.add(f"upsample{stage}", "Upsample", [x, f"pool{stage}_mask"],
                    body="upsample_param { scale: 2 }")
        for i in range(count, 0, -1):
            last = i == 1
            out = classes if stage == 1 and last else (
                plan[stage - 2][1] if last and stage > 1 else width)
            x = net.conv(f"conv{stage}_{i}_D", x, out, 3, 1, 1, bias=True)
            if stage == 1 and last:
                break
            net.add(f"conv{stage}_{i}_D_bn", "BN", x, x, bn)
            net.add(f"relu{stage}_{i}_D", "ReLU", x, x)
    net.add("prob", "Softmax", x)
    return net.text()


def seeded_weights(prototxt, path=None, seed=0):
    """`prototxt`'s net with its learned blobs from numpy's seeded generator: convolutions
    He-normal, biases and BN shifts small, BN scales near 1, statistics (PSPNet: mean near 0,
    variance near 1); saved as a .caffemodel at `path` when given."""
    net = caffe.Net(prototxt, caffe.TEST)
    rng = np.random.RandomState(seed)
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if kind == "BN":
                values = [rng.uniform(0.8, 1.2, shape), rng.uniform(-0.1, 0.1, shape),
                          rng.uniform(-0.1, 0.1, shape), rng.uniform(0.8, 1.2, shape)][i]
            elif i == 0:
                fan_in = int(np.prod(shape[1:]))
                values = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            else:
                values = rng.uniform(-0.1, 0.1, shape)
            blob.data[...] = values.astype(np.float32)
    if path is not None:
        net.save(str(path))
    return net


def seeded_input(shape, seed=1):
    return np.random.RandomState(seed).uniform(-1, 1, shape).astype(np.float32)


__all__ = ["pspnet", "deeplab_largefov", "segnet", "seeded_weights", "seeded_input",
           "caffe_pb2"]
