"""Deploy (and train) prototxts of the published SSD models, written from their layouts:
SSD300 on VGG16 (Liu et al., weiliu89/caffe examples/ssd), MobileNet-SSD
(chuanqi305/MobileNet-SSD) and Pelee (Robert-JunWang/Pelee, reduced). `width` divides every
channel count, for quick test runs.
"""


class Text:
    """A prototxt being written, one layer at a time."""

    def __init__(self, name):
        self.lines = [f'name: "{name}"']

    def layer(self, name, type_, bottom, top, body=""):
        bottoms = " ".join(f'bottom: "{b}"' for b in ([bottom] if isinstance(bottom, str)
                                                       else bottom))
        self.lines.append(f'layer {{ name: "{name}" type: "{type_}" {bottoms} top: "{top}" '
                          f'{body} }}')
        return top

    def conv(self, name, bottom, n, k=3, s=1, p=None, dilation=1, group=1, bias=True,
             relu=True):
        p = (k // 2) * dilation if p is None else p
        extra = (f" stride: {s}" if s > 1 else "") + (f" pad: {p}" if p else "") + \
            (f" dilation: {dilation}" if dilation > 1 else "") + \
            (f" group: {group}" if group > 1 else "") + ("" if bias else " bias_term: false")
        self.layer(name, "Convolution", bottom, name,
                   f'convolution_param {{ num_output: {n} kernel_size: {k}{extra} '
                   f'weight_filler {{ type: "msra" }} '
                   f'bias_filler {{ type: "constant" value: 0.01 }} }}')
        if relu:
            self.layer(f"{name}_relu", "ReLU", name, name)
        return name

    def text(self):
        return "\n".join(self.lines) + "\n"


def _heads(t, sources, num_classes, kernel, data="data"):
    """loc/conf convolutions, Permute, Flatten and PriorBox per source; their Concats."""
    locs, confs, priors = [], [], []
    for src, (min_s, max_s, ratios, step) in sources:
        num = 1 + (max_s is not None) + 2 * len(ratios)
        pad = kernel // 2
        for kind, n, out in (("loc", num * 4, locs), ("conf", num * num_classes, confs)):
            name = f"{src}_mbox_{kind}"
            t.conv(name, src, n, k=kernel, p=pad, relu=False)
            t.layer(f"{name}_perm", "Permute", name, f"{name}_perm",
                    "permute_param { order: 0 order: 2 order: 3 order: 1 }")
            out.append(t.layer(f"{name}_flat", "Flatten", f"{name}_perm", f"{name}_flat",
                               "flatten_param { axis: 1 }"))
        body = f"min_size: {min_s} " + (f"max_size: {max_s} " if max_s else "") + \
            "".join(f"aspect_ratio: {r} " for r in ratios) + \
            "flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 " + \
            (f"step: {step} " if step else "") + "offset: 0.5"
        priors.append(t.layer(f"{src}_mbox_priorbox", "PriorBox", [src, data],
                              f"{src}_mbox_priorbox", f"prior_box_param {{ {body} }}"))
    t.layer("mbox_loc", "Concat", locs, "mbox_loc", "concat_param { axis: 1 }")
    t.layer("mbox_conf", "Concat", confs, "mbox_conf", "concat_param { axis: 1 }")
    t.layer("mbox_priorbox", "Concat", priors, "mbox_priorbox", "concat_param { axis: 2 }")


def _deploy_tail(t, num_classes, top_k, keep_top_k, threshold):
    t.layer("mbox_conf_reshape", "Reshape", "mbox_conf", "mbox_conf_reshape",
            f"reshape_param {{ shape {{ dim: 0 dim: -1 dim: {num_classes} }} }}")
    t.layer("mbox_conf_softmax", "Softmax", "mbox_conf_reshape", "mbox_conf_softmax",
            "softmax_param { axis: 2 }")
    t.layer("mbox_conf_flatten", "Flatten", "mbox_conf_softmax", "mbox_conf_flatten",
            "flatten_param { axis: 1 }")
    t.layer("detection_out", "DetectionOutput", ["mbox_loc", "mbox_conf_flatten", "mbox_priorbox"],
            "detection_out", f"detection_output_param {{ num_classes: {num_classes} "
            f"share_location: true background_label_id: 0 nms_param {{ nms_threshold: 0.45 "
            f"top_k: {top_k} }} code_type: CENTER_SIZE keep_top_k: {keep_top_k} "
            f"confidence_threshold: {threshold} }}")


def _input(t, size, batch=1):
    t.lines.append(f'layer {{ name: "input" type: "Input" top: "data" input_param {{ shape {{ '
                   f'dim: {batch} dim: 3 dim: {size} dim: {size} }} }} }}')


def ssd300_vgg(num_classes=21, width=1, batch=1, body_only=False):
    """SSD300: VGG16 with fc6/fc7 as (dilated) convolutions, conv6-9 extra layers, 6 heads."""
    w = lambda n: max(n // width, 4)  # noqa: E731
    t = Text("VGG_VOC0712_SSD_300x300_deploy")
    _input(t, 300, batch)
    x = "data"
    for block, (n, reps) in enumerate([(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)], 1):
        for r in range(1, reps + 1):
            x = t.conv(f"conv{block}_{r}", x, w(n))
        if block == 4:
            t.layer("conv4_3_norm", "Normalize", x, "conv4_3_norm",
                    'norm_param { across_spatial: false scale_filler { type: "constant" '
                    'value: 20 } channel_shared: false }')
        pool = "kernel_size: 3 stride: 1 pad: 1" if block == 5 else "kernel_size: 2 stride: 2"
        x = t.layer(f"pool{block}", "Pooling", x, f"pool{block}",
                    f"pooling_param {{ pool: MAX {pool} }}")
    x = t.conv("fc6", x, w(1024), k=3, dilation=6)
    x = t.conv("fc7", x, w(1024), k=1)
    for stage, (n1, n2, s, p) in enumerate([(256, 512, 2, 1), (128, 256, 2, 1), (128, 256, 1, 0),
                                            (128, 256, 1, 0)], 6):
        x = t.conv(f"conv{stage}_1", x, w(n1), k=1)
        x = t.conv(f"conv{stage}_2", x, w(n2), k=3, s=s, p=p)
    sources = [("conv4_3_norm", (30, 60, [2], 8)), ("fc7", (60, 111, [2, 3], 16)),
               ("conv6_2", (111, 162, [2, 3], 32)), ("conv7_2", (162, 213, [2, 3], 64)),
               ("conv8_2", (213, 264, [2], 100)), ("conv9_2", (264, 315, [2], 300))]
    _heads(t, sources, num_classes, kernel=3)
    if not body_only:
        _deploy_tail(t, num_classes, top_k=400, keep_top_k=200, threshold=0.01)
    return t.text()


def mobilenet_ssd(num_classes=21, width=1, batch=1, body_only=False):
    """MobileNet-SSD: MobileNet v1 (BatchNorm + Scale, depthwise as grouped convolution),
    conv14-17 extra layers, heads of 1x1 convolutions on conv11, conv13, conv14_2 ... 17_2."""
    w = lambda n: max(n // width, 4)  # noqa: E731
    t = Text("MobileNet-SSD")
    _input(t, 300, batch)

    def unit(name, bottom, n, k=1, s=1, group=1):
        t.conv(name, bottom, n, k=k, s=s, group=group, bias=False, relu=False)
        t.layer(f"{name}/bn", "BatchNorm", name, name,
                "batch_norm_param { use_global_stats: true eps: 1e-5 }")
        t.layer(f"{name}/scale", "Scale", name, name, "scale_param { bias_term: true }")
        t.layer(f"{name}/relu", "ReLU", name, name)
        return name

    x = unit("conv0", "data", w(32), k=3, s=2)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + \
        [(1024, 2), (1024, 1)]
    channels = w(32)
    for i, (n, s) in enumerate(plan, 1):
        x = unit(f"conv{i}/dw", x, channels, k=3, s=s, group=channels)
        x = unit(f"conv{i}", x, w(n))
        channels = w(n)
    for stage, (n1, n2) in enumerate([(256, 512), (128, 256), (128, 256), (64, 128)], 14):
        x = unit(f"conv{stage}_1", x, w(n1))
        x = unit(f"conv{stage}_2", x, w(n2), k=3, s=2)
    sources = [("conv11", (60, None, [2], None)), ("conv13", (105, 150, [2, 3], None)),
               ("conv14_2", (150, 195, [2, 3], None)), ("conv15_2", (195, 240, [2, 3], None)),
               ("conv16_2", (240, 285, [2, 3], None)), ("conv17_2", (285, 300, [2, 3], None))]
    _heads(t, sources, num_classes, kernel=1)
    if not body_only:
        _deploy_tail(t, num_classes, top_k=100, keep_top_k=100, threshold=0.25)
    return t.text()


def pelee(num_classes=21, width=1, size=304, dense=(3, 4, 8, 6)):
    """Pelee's layout (its deploy_merged.prototxt, BatchNorm folded): a stem whose MAX pooling
    branch joins a strided convolution, two-way dense layers, transitions with AVE pooling
    (ceil-rounded at odd sizes), extra stages, ResBlock heads (Eltwise) under each of six
    sources with fractional prior sizes, and SSD's tail. `dense` gives each stage's dense
    layers (the published net's are 3, 4, 8, 6)."""
    w = lambda n: max(n // width, 4)  # noqa: E731
    t = Text("pelee")
    _input(t, size)
    t.conv("stem1", "data", w(32), k=3, s=2)
    t.conv("stem2a", "stem1", w(16), k=1)
    t.conv("stem2b", "stem2a", w(32), k=3, s=2)
    t.layer("stem/pool", "Pooling", "stem1", "stem/pool",
            "pooling_param { pool: MAX kernel_size: 2 stride: 2 }")
    t.layer("stem/concat", "Concat", ["stem/pool", "stem2b"], "stem/concat")
    x = t.conv("stem3", "stem/concat", w(32), k=1)
    for stage, (count, out, branch) in enumerate(zip(dense, (128, 256, 512, 704),
                                                     (16, 32, 64, 64)), 1):
        for i in range(1, count + 1):
            name = f"stage{stage}_{i}"
            t.conv(f"{name}/branch1a", x, w(2 * branch), k=1)
            b1 = t.conv(f"{name}/branch1b", f"{name}/branch1a", w(branch // 2), k=3)
            t.conv(f"{name}/branch2a", x, w(2 * branch), k=1)
            t.conv(f"{name}/branch2b", f"{name}/branch2a", w(branch // 2), k=3)
            b2 = t.conv(f"{name}/branch2c", f"{name}/branch2b", w(branch // 2), k=3)
            x = t.layer(f"{name}/concat", "Concat", [x, b1, b2], f"{name}/concat")
        x = t.conv(f"stage{stage}_tb", x, w(out), k=1)
        if stage < 4:
            x = t.layer(f"stage{stage}_tb/pool", "Pooling", x, f"stage{stage}_tb/pool",
                        "pooling_param { pool: AVE kernel_size: 2 stride: 2 }")
    sources, x = ["stage3_tb", "stage4_tb"], "stage4_tb"
    for k, (n1, n2, s, p) in enumerate([(256, 256, 2, 1), (128, 256, 1, 0), (128, 256, 1, 0)],
                                       1):
        t.conv(f"ext/fe{k}_1", x, w(n1), k=1)
        x = t.conv(f"ext/fe{k}_2", f"ext/fe{k}_1", w(n2), k=3, s=s, p=p)
        sources.append(x)
    sources.append(sources[-1])         # the published net also reads its last map twice
    heads = []
    for k, src in enumerate(sources, 1):
        name = f"{src}/ext/pm{k}"
        t.conv(f"{name}/b2a", src, w(128), k=1)
        t.conv(f"{name}/b2b", f"{name}/b2a", w(128), k=3)
        b2 = t.conv(f"{name}/b2c", f"{name}/b2b", w(256), k=1, relu=False)
        b1 = t.conv(f"{name}/b1", src, w(256), k=1, relu=False)
        res = t.layer(f"{name}/res", "Eltwise", [b1, b2], f"{name}/res")
        t.layer(f"{name}/res/relu", "ReLU", res, res)
        heads.append(res)
    steps = [size * f for f in (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)]
    _heads(t, [(h, (round(steps[k], 4), round(steps[k + 1], 4), [2, 3], None))
               for k, h in enumerate(heads)], num_classes, kernel=1)
    _deploy_tail(t, num_classes, top_k=400, keep_top_k=200, threshold=0.01)
    return t.text()
