"""The inference benchmark's corpus: deploy nets of the architectures people run through OpenCV
dnn and ONNX Runtime, written here as prototxt (or read from ../shared/models), with random
weights from a fixed seed.

    text = NETS["mobilenet_v2"].prototxt(batch=1)
    net, weights = build(NETS["mobilenet_v2"], batch=1, folder=tmp)   # pycaffe net + .caffemodel

Each Entry says whether the net is small (OpenCV runs it in well under 10 ms at batch 1, one
thread: the CI agreement test runs these) and heavy (seconds per forward on one core: batch-16
rows leave it out unless it is named). Layouts follow the published deploy prototxts; the
SSD is tests/detection_nets.py's MobileNet-SSD (shared with the detection tests).
"""
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from caffe.layer import LAYER_REGISTRY
from caffe.testing import relative_difference
from tests.detection_nets import Text, mobilenet_ssd
from tests.ranked import DETECTION_KEYS, DETECTION_SCORE, match_rows

SHARED_MODELS = Path(__file__).resolve().parents[2] / "shared" / "models"
SEED = 0


def relu6_type():
    """ReLU6 where this build registers it (MobileNets use it); plain ReLU otherwise."""
    import caffe.layers  # noqa: F401  (registers the built-in types)
    return "ReLU6" if "ReLU6" in LAYER_REGISTRY else "ReLU"


# -- builders -------------------------------------------------------------------------------
class Net(Text):
    """Text with the units the corpus repeats."""

    def __init__(self, name, shape):
        super().__init__(name)
        dims = " ".join(f"dim: {d}" for d in (1,) + tuple(shape))
        self.lines.append(f'layer {{ name: "data" type: "Input" top: "data" '
                          f'input_param {{ shape {{ {dims} }} }} }}')

    def bn_conv(self, name, bottom, n, k=1, s=1, group=1, act="ReLU"):
        """Convolution without bias, BatchNorm, Scale, activation (none when act is None)."""
        self.conv(name, bottom, n, k=k, s=s, group=group, bias=False, relu=False)
        self.bn(name)
        if act:
            self.layer(f"{name}/relu", act, name, name)
        return name

    def bn(self, name, bottom=None, top=None):
        bottom = bottom or name
        top = top or name
        self.layer(f"{top}/bn", "BatchNorm", bottom, top,
                   "batch_norm_param { use_global_stats: true eps: 1e-5 }")
        self.layer(f"{top}/scale", "Scale", top, top, "scale_param { bias_term: true }")
        return top

    def pool(self, name, bottom, k=2, s=2, p=0, kind="MAX", global_=False):
        body = "global_pooling: true" if global_ else \
            f"kernel_size: {k} stride: {s}" + (f" pad: {p}" if p else "")
        return self.layer(name, "Pooling", bottom, name,
                          f"pooling_param {{ pool: {kind} {body} }}")

    def fc(self, name, bottom, n):
        return self.layer(name, "InnerProduct", bottom, name,
                          f'inner_product_param {{ num_output: {n} '
                          f'weight_filler {{ type: "xavier" }} }}')

    def prelu(self, name):
        return self.layer(f"{name}/prelu", "PReLU", name, name)

    def softmax(self, name, bottom):
        return self.layer(name, "Softmax", bottom, name)


def mobilenet_v1():
    act = relu6_type()
    t = Net("MobileNet-v1", (3, 224, 224))
    x = t.bn_conv("conv1", "data", 32, k=3, s=2, act=act)
    channels = 32
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    for i, (n, s) in enumerate(plan, 2):
        x = t.bn_conv(f"conv{i}_dw", x, channels, k=3, s=s, group=channels, act=act)
        x = t.bn_conv(f"conv{i}_sep", x, n, act=act)
        channels = n
    x = t.pool("pool6", x, kind="AVE", global_=True)
    x = t.conv("fc7", x, 1000, k=1, relu=False)
    t.softmax("prob", x)
    return t.text()


def mobilenet_v2():
    act = relu6_type()
    t = Net("MobileNet-v2", (3, 224, 224))
    x = t.bn_conv("conv1", "data", 32, k=3, s=2, act=act)
    channels, block = 32, 0
    for expand, n, repeat, stride in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for r in range(repeat):
            block += 1
            s, name, inp = (stride if r == 0 else 1), f"block{block}", x
            hidden = channels * expand
            if expand != 1:
                x = t.bn_conv(f"{name}/expand", x, hidden, act=act)
            x = t.bn_conv(f"{name}/dw", x, hidden, k=3, s=s, group=hidden, act=act)
            x = t.bn_conv(f"{name}/linear", x, n, act=None)
            if s == 1 and channels == n:
                x = t.layer(f"{name}/add", "Eltwise", [inp, x], f"{name}/add")
            channels = n
    x = t.bn_conv("conv_last", x, 1280, act=act)
    x = t.pool("pool", x, kind="AVE", global_=True)
    x = t.conv("fc", x, 1000, k=1, relu=False)
    t.softmax("prob", x)
    return t.text()


def squeezenet():
    """SqueezeNet v1.1 (DeepScale/SqueezeNet)."""
    t = Net("SqueezeNet-v1.1", (3, 227, 227))
    x = t.conv("conv1", "data", 64, k=3, s=2, p=0)
    x = t.pool("pool1", x, k=3, s=2)
    for i, (sq, ex) in enumerate([(16, 64), (16, 64), (32, 128), (32, 128), (48, 192),
                                  (48, 192), (64, 256), (64, 256)], 2):
        name = f"fire{i}"
        x = t.conv(f"{name}/squeeze1x1", x, sq, k=1)
        a = t.conv(f"{name}/expand1x1", x, ex, k=1)
        b = t.conv(f"{name}/expand3x3", x, ex, k=3)
        x = t.layer(f"{name}/concat", "Concat", [a, b], f"{name}/concat")
        if i in (3, 5):
            x = t.pool(f"pool{i}", x, k=3, s=2)
    x = t.conv("conv10", x, 1000, k=1)
    x = t.pool("pool10", x, kind="AVE", global_=True)
    t.softmax("prob", x)
    return t.text()


def shufflenet(groups=3):
    """ShuffleNet v1, g = 3 (farmingyard/ShuffleNet): grouped 1x1 convolutions, channel
    shuffle, depthwise 3x3; stride-2 units concatenate an average-pooled shortcut."""
    t = Net("ShuffleNet-g3", (3, 224, 224))
    x = t.bn_conv("conv1", "data", 24, k=3, s=2)
    x = t.pool("pool1", x, k=3, s=2)
    channels = 24
    for stage, (out, repeat) in enumerate([(240, 4), (480, 8), (960, 4)], 2):
        for r in range(repeat):
            name, inp, s = f"stage{stage}_{r}", x, 2 if r == 0 else 1
            width = out - channels if s == 2 else out
            mid = out // 4
            g = 1 if channels == 24 else groups
            x = t.bn_conv(f"{name}/gconv1", x, mid, group=g)
            if g > 1:
                x = t.layer(f"{name}/shuffle", "ShuffleChannel", x, f"{name}/shuffle",
                            f"shuffle_channel_param {{ group: {g} }}")
            x = t.bn_conv(f"{name}/dw", x, mid, k=3, s=s, group=mid, act=None)
            x = t.bn_conv(f"{name}/gconv2", x, width, group=groups, act=None)
            if s == 2:
                short = t.pool(f"{name}/short", inp, k=3, s=2, kind="AVE")
                x = t.layer(f"{name}/concat", "Concat", [short, x], f"{name}/concat")
            else:
                x = t.layer(f"{name}/add", "Eltwise", [inp, x], f"{name}/add")
            t.layer(f"{name}/relu", "ReLU", x, x)
            channels = out
    x = t.pool("pool_ave", x, kind="AVE", global_=True)
    x = t.conv("fc1000", x, 1000, k=1, relu=False)
    t.softmax("prob", x)
    return t.text()


def mtcnn_pnet():
    """MTCNN's det1 (kpzhang93/MTCNN_face_detection_alignment) on its 12x12 window."""
    t = Net("PNet", (3, 12, 12))
    x = t.prelu(t.conv("conv1", "data", 10, k=3, p=0, relu=False))
    x = t.pool("pool1", x)
    x = t.prelu(t.conv("conv2", x, 16, k=3, p=0, relu=False))
    x = t.prelu(t.conv("conv3", x, 32, k=3, p=0, relu=False))
    t.softmax("prob1", t.conv("conv4-1", x, 2, k=1, relu=False))
    t.conv("conv4-2", x, 4, k=1, relu=False)
    return t.text()


def mtcnn_rnet():
    t = Net("RNet", (3, 24, 24))
    x = t.prelu(t.conv("conv1", "data", 28, k=3, p=0, relu=False))
    x = t.pool("pool1", x, k=3, s=2)
    x = t.prelu(t.conv("conv2", x, 48, k=3, p=0, relu=False))
    x = t.pool("pool2", x, k=3, s=2)
    x = t.prelu(t.conv("conv3", x, 64, k=2, p=0, relu=False))
    x = t.prelu(t.fc("conv4", x, 128))
    t.softmax("prob1", t.fc("conv5-1", x, 2))
    t.fc("conv5-2", x, 4)
    return t.text()


def mtcnn_onet():
    t = Net("ONet", (3, 48, 48))
    x = t.prelu(t.conv("conv1", "data", 32, k=3, p=0, relu=False))
    x = t.pool("pool1", x, k=3, s=2)
    x = t.prelu(t.conv("conv2", x, 64, k=3, p=0, relu=False))
    x = t.pool("pool2", x, k=3, s=2)
    x = t.prelu(t.conv("conv3", x, 64, k=3, p=0, relu=False))
    x = t.pool("pool3", x)
    x = t.prelu(t.conv("conv4", x, 128, k=2, p=0, relu=False))
    x = t.prelu(t.fc("conv5", x, 256))
    t.softmax("prob1", t.fc("conv6-1", x, 2))
    t.fc("conv6-2", x, 4)
    t.fc("conv6-3", x, 10)
    return t.text()


def srcnn():
    """SRCNN 9-1-5 (Dong et al.) on a 96x96 luminance image."""
    t = Net("SRCNN", (1, 96, 96))
    x = t.conv("conv1", "data", 64, k=9)
    x = t.conv("conv2", x, 32, k=1)
    t.conv("conv3", x, 1, k=5, relu=False)
    return t.text()


def _vgg16_body(t, x="data", widths=(64, 128, 256, 512, 512)):
    pools = []
    for block, (n, reps) in enumerate(zip(widths, (2, 2, 3, 3, 3)), 1):
        for r in range(1, reps + 1):
            x = t.conv(f"conv{block}_{r}", x, n)
        x = t.pool(f"pool{block}", x)
        pools.append(x)
    return pools


def vgg16():
    t = Net("VGG_ILSVRC_16_layers", (3, 224, 224))
    x = _vgg16_body(t)[-1]
    for name, n in (("fc6", 4096), ("fc7", 4096)):
        x = t.fc(name, x, n)
        t.layer(f"relu{name[2:]}", "ReLU", x, x)
    t.softmax("prob", t.fc("fc8", x, 1000))
    return t.text()


def fcn8s(classes=21):
    """FCN-8s's skip architecture (shelhamer/fcn.berkeleyvision.org) on a VGG-16 body with
    DeepLab's 3x3 fc6 (no 100-pixel padding: 224x224 in, 224x224 scores out); the 8x
    upsampling is a grouped (per class) bilinear Deconvolution."""
    t = Net("FCN-8s", (3, 224, 224))
    pool3, pool4, pool5 = _vgg16_body(t)[2:]
    x = t.conv("fc6", pool5, 1024, k=3)
    x = t.conv("fc7", x, 1024, k=1)
    x = t.conv("score_fr", x, classes, k=1, relu=False)

    def up(name, bottom, k, s, group=1):
        return t.layer(name, "Deconvolution", bottom, name,
                       f"convolution_param {{ num_output: {classes} kernel_size: {k} "
                       f"stride: {s} pad: {(k - s) // 2} group: {group} bias_term: false "
                       f'weight_filler {{ type: "bilinear" }} }}')

    def fuse(name, upscored, pool):
        score = t.conv(f"score_{pool}", pool, classes, k=1, relu=False)
        crop = t.layer(f"score_{pool}c", "Crop", [score, upscored], f"score_{pool}c",
                       "crop_param { axis: 2 offset: 0 }")
        return t.layer(name, "Eltwise", [upscored, crop], name)

    x = fuse("fuse_pool4", up("upscore2", x, 4, 2), pool4)
    x = fuse("fuse_pool3", up("upscore_pool4", x, 4, 2), pool3)
    x = up("upscore8", x, 16, 8, group=classes)
    t.layer("score", "Crop", [x, "data"], "score", "crop_param { axis: 2 offset: 0 }")
    return t.text()


def densenet121(growth=32):
    """DenseNet-121 as shicai/DenseNet-Caffe: BN-Scale-ReLU-conv pre-activation units."""
    t = Net("DenseNet-121", (3, 224, 224))
    x = t.bn_conv("conv1", "data", 64, k=7, s=2)
    x = t.pool("pool1", x, k=3, s=2, p=1)
    channels = 64
    for block, units in enumerate((6, 12, 24, 16), 2):
        for u in range(1, units + 1):
            name = f"conv{block}_{u}"
            y = t.bn(f"{name}/x1", x, f"{name}/x1/pre")
            t.layer(f"{name}/x1/relu", "ReLU", y, y)
            y = t.conv(f"{name}/x1", y, 4 * growth, k=1, bias=False, relu=False)
            t.bn(f"{name}/x2/pre", y, f"{name}/x2/pre")
            y = f"{name}/x2/pre"
            t.layer(f"{name}/x2/relu", "ReLU", y, y)
            y = t.conv(f"{name}/x2", y, growth, k=3, bias=False, relu=False)
            x = t.layer(f"concat_{block}_{u}", "Concat", [x, y], f"concat_{block}_{u}")
            channels += growth
        if block < 5:
            y = t.bn(f"conv{block}_blk/pre", x, f"conv{block}_blk/pre")
            t.layer(f"conv{block}_blk/relu", "ReLU", y, y)
            channels //= 2
            y = t.conv(f"conv{block}_blk", y, channels, k=1, bias=False, relu=False)
            x = t.pool(f"pool{block}", y, kind="AVE")
    y = t.bn("conv5_blk/pre", x, "conv5_blk/pre")
    t.layer("conv5_blk/relu", "ReLU", y, y)
    x = t.pool("pool5", y, kind="AVE", global_=True)
    x = t.conv("fc6", x, 1000, k=1, relu=False)
    t.softmax("prob", x)
    return t.text()


def openpose(stages=2):
    """OpenPose's COCO body net (CMU-Perceptual-Computing-Lab/openpose, pose_deploy_linevec)
    at its 368x368 input: VGG-19's first ten convolutions, then `stages` of the six two-branch
    stages (PAFs 38, heatmaps 19; stage 1 of 3x3 convolutions, later ones of 7x7)."""
    t = Net("OpenPose-COCO", (3, 368, 368))
    x = "data"
    for block, (n, reps) in enumerate([(64, 2), (128, 2), (256, 4), (512, 2)], 1):
        for r in range(1, reps + 1):
            x = t.conv(f"conv{block}_{r}", x, n)
        if block < 4:
            x = t.pool(f"pool{block}_stage1", x)
    x = t.conv("conv4_3_CPM", x, 256)
    feats = t.conv("conv4_4_CPM", x, 128)
    x = feats
    for stage in range(1, stages + 1):
        outs = []
        for branch, n_out in ((1, 38), (2, 19)):
            y = x
            convs = [(3, 128)] * 3 + [(1, 512)] if stage == 1 else [(7, 128)] * 5 + [(1, 128)]
            for i, (k, n) in enumerate(convs, 1):
                y = t.conv(f"conv5_{i}_CPM_L{branch}" if stage == 1 else
                           f"Mconv{i}_stage{stage}_L{branch}", y, n, k=k)
            last = len(convs) + 1
            outs.append(t.conv(f"conv5_{last}_CPM_L{branch}" if stage == 1 else
                               f"Mconv{last}_stage{stage}_L{branch}", y, n_out, k=1,
                               relu=False))
        if stage < stages:
            x = t.layer(f"concat_stage{stage + 1}", "Concat", outs + [feats],
                        f"concat_stage{stage + 1}")
    return t.text()


def siamese():
    """The MNIST siamese tutorial's deploy net (examples/siamese/mnist_siamese.prototxt)."""
    t = Net("mnist_siamese", (1, 28, 28))
    x = t.conv("conv1", "data", 20, k=5, p=0, relu=False)
    x = t.pool("pool1", x)
    x = t.conv("conv2", x, 50, k=5, p=0, relu=False)
    x = t.pool("pool2", x)
    x = t.fc("ip1", x, 500)
    t.layer("relu1", "ReLU", x, x)
    x = t.fc("ip2", x, 10)
    t.fc("feat", x, 2)
    return t.text()


def ssd_mobilenet():
    return mobilenet_ssd()


def shared(name):
    def read():
        path = SHARED_MODELS / name
        if not path.exists():
            raise FileNotFoundError(f"{path} (../shared/models beside the project) is absent")
        return path.read_text()
    read.__doc__ = f"../shared/models/{name}"
    read.shared_file = name
    return read


# -- the corpus -----------------------------------------------------------------------------
@dataclass
class Entry:
    name: str
    source: object            # () -> prototxt text at batch 1
    small: bool = False       # OpenCV needs well under 10 ms at batch 1 on one thread
    heavy: bool = False       # seconds per forward on one core: batch > 1 rows skip it
    note: str = ""
    outputs: tuple = field(default=())   # the outputs to compare (default: all)

    @property
    def needs_shared(self):
        """Whether the prototxt is read from ../shared/models."""
        return hasattr(self.source, "shared_file")

    def prototxt(self, batch=1):
        return set_batch(self.source(), batch)


CORPUS = [
    Entry("mobilenet_v1", mobilenet_v1, note="depthwise; ReLU6 where registered"),
    Entry("mobilenet_v2", mobilenet_v2, note="depthwise, inverted residuals"),
    Entry("squeezenet_v1.1", squeezenet),
    Entry("shufflenet_g3", shufflenet, note="grouped 1x1, ShuffleChannel, depthwise"),
    Entry("mtcnn_pnet", mtcnn_pnet, small=True),
    Entry("mtcnn_rnet", mtcnn_rnet, small=True),
    Entry("mtcnn_onet", mtcnn_onet, small=True),
    Entry("srcnn", srcnn, small=True),
    Entry("siamese", siamese, small=True),
    Entry("cifar10_quick", shared("cifar10_quick.prototxt"), small=True),
    Entry("caffenet", shared("bvlc_reference_caffenet.prototxt"), note="LRN, group 2"),
    Entry("googlenet", shared("bvlc_googlenet.prototxt")),
    Entry("resnet50", shared("ResNet-50-deploy.prototxt")),
    Entry("densenet121", densenet121),
    Entry("vgg16", vgg16, heavy=True),
    Entry("fcn8s", fcn8s, heavy=True, note="Deconvolution, Crop"),
    Entry("ssd_mobilenet", ssd_mobilenet, note="PriorBox, Permute, DetectionOutput"),
    Entry("openpose", openpose, heavy=True, note="2 of 6 stages at 368x368"),
]
NETS = {e.name: e for e in CORPUS}


def set_batch(text, batch):
    """The prototxt with its inputs' first dimension set to `batch` (Input layers, net-level
    input_shape / input_dim)."""
    from google.protobuf import text_format
    from caffe.proto import caffe_pb2
    param = text_format.Parse(text, caffe_pb2.NetParameter())
    for shape in list(param.input_shape) + [s for lp in param.layer if lp.type == "Input"
                                            for s in lp.input_param.shape]:
        shape.dim[0] = batch
    if param.input_dim:
        for i in range(0, len(param.input_dim), 4):
            param.input_dim[i] = batch
    return text_format.MessageToString(param)


# -- weights --------------------------------------------------------------------------------
def randomize(net, seed=SEED):
    """Weights that keep activations of order one through deep nets (He-scaled convolutions,
    BatchNorm statistics near the identity, spread-out detection scores), then the classifier
    scaled so that the logits have standard deviation 2: softmax outputs that are not
    saturated to 0 and 1, so that comparing them means something."""
    rng = np.random.default_rng(seed)

    def normal(blob, std):
        blob.data[...] = rng.standard_normal(blob.data.shape, np.float32) * np.float32(std)

    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            normal(blobs[0], 0.1)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].data.shape)
            blobs[2].data[...] = 1
        elif kind == "Scale":
            blobs[0].data[...] = rng.uniform(0.8, 1.2, blobs[0].data.shape)
            if len(blobs) > 1:
                normal(blobs[1], 0.1)
        elif kind == "PReLU":
            blobs[0].data[...] = rng.uniform(0.1, 0.3, blobs[0].data.shape)
        elif kind in ("Convolution", "InnerProduct", "Deconvolution"):
            w = blobs[0].data
            fan_in = w[0].size if kind != "Deconvolution" else w.size // w.shape[1]
            normal(blobs[0], np.sqrt((1.0 if "mbox" in name else 2.0) / fan_in))
            if len(blobs) > 1:
                normal(blobs[1], 1.0 if "mbox_conf" in name else 0.1)
        elif kind != "Normalize":
            for b in blobs:
                normal(b, 0.1)
    _calibrate_logits(net, rng)


def _calibrate_logits(net, rng):
    producers = {top: name for name in net.layer_dict for top in net.top_names[name]}
    softmax_inputs = [net.bottom_names[name][0] for name, layer in net.layer_dict.items()
                      if layer.type == "Softmax"]
    targets = [(b, producers.get(b)) for b in softmax_inputs]
    targets = [(b, p) for b, p in targets if p in net.params]
    if not targets:
        return
    net.forward(**{n: rng.uniform(-1, 1, net.blobs[n].data.shape).astype(np.float32)
                   for n in net.inputs})
    for blob, producer in targets:
        std = float(net.blobs[blob].data.std())
        if std > 0:
            for b in net.params[producer]:
                b.data[...] *= 2.0 / std


def build(entry, batch, folder, seed=SEED):
    """(pycaffe TEST net with random weights, prototxt path, caffemodel path) in `folder`."""
    import caffe
    folder = Path(folder)
    proto = folder / f"{entry.name}_b{batch}.prototxt"
    proto.write_text(entry.prototxt(batch))
    weights = folder / f"{entry.name}.caffemodel"
    if weights.exists():
        net = caffe.Net(str(proto), str(weights), caffe.TEST)
    else:
        net = caffe.Net(str(proto), caffe.TEST)
        randomize(net, seed)
        net.save(str(weights))
    return net, proto, weights


def inputs(net, seed=SEED):
    """A fixed random input per input blob: {name: float32 array}."""
    rng = np.random.RandomState(seed + 1)
    return {name: rng.uniform(-1, 1, net.blobs[name].data.shape).astype(np.float32)
            for name in net.inputs}


def relative_error(ours, theirs, name=""):
    """max |ours - theirs| / max(1, max |theirs|); DetectionOutput rows paired as a set (two
    engines may order near-equal scores either way: tests/ranked.py), inf where they differ."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if name == "detection_out":
        ours, theirs = ours.reshape(-1, 7), theirs.reshape(-1, 7)
        try:
            pairs = match_rows(ours, theirs, tol=1e-4 * max(1.0, np.abs(theirs).max(initial=0)),
                               keys=DETECTION_KEYS, score=DETECTION_SCORE)
        except AssertionError:
            return float("inf")
        ours, theirs = ours[pairs[:, 0]], theirs[pairs[:, 1]]
    if ours.shape != theirs.shape and ours.size == theirs.size:
        theirs = theirs.reshape(ours.shape)
    return relative_difference(ours, theirs)
