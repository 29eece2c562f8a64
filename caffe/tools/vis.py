"""`caffe vis`: PNGs of a net's filters, activations and predictions for one image.

    caffe vis -model deploy.prototxt [-weights w.caffemodel] [-image cat.jpg]
              -blobs conv1,pool5 -o out/ [-mean 104,117,123 | -mean mean.binaryproto]
              [-labels synset_words.txt] [-k 5] [-normalize tile|global]
              [-allow_python_layers=false]

For each name in -blobs: a layer with 4-D weights gives NAME_filters.png (the filters
tiled, as the notebooks' vis_square) and NAME_weights_hist.png; a blob gives NAME.png (its
feature maps tiled for the first image, or a line plot for a vector) and NAME_hist.png.
With an image the net runs forward first and the top-k classes of its output are printed
and plotted (top_k.png). Without -weights the layers keep their fillers' random values.
"""
import argparse
import os
import sys

import numpy as np

from .. import io, vis
from ..errors import CaffeError
from ..layers.python_layer import python_layers_allowed, set_python_layers_allowed
from ..net import Net
from ..proto import caffe_pb2
from .gflags import bool_arg, gflags_argv


def _parser():
    p = argparse.ArgumentParser(prog="caffe vis", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    flag = lambda name, **kw: p.add_argument("-" + name, "--" + name, **kw)  # noqa: E731
    flag("model", required=True, help="the net definition (a deploy prototxt)")
    flag("weights", default="", help="trained weights (.caffemodel or .h5)")
    flag("image", default="", help="an image to run through the net")
    flag("blobs", default="", help="layer and blob names separated by ','")
    p.add_argument("-o", "--output_dir", "-output_dir", required=True, dest="output_dir")
    flag("mean", default="", help="B,G,R mean pixel values, or a mean .binaryproto/.npy")
    flag("raw_scale", type=float, default=255.0, help="scale of the [0, 1] image pixels")
    flag("channel_swap", default="2,1,0", help="RGB -> the net's channel order")
    flag("labels", default="", help="class names, one a line (synset_words.txt)")
    flag("k", type=int, default=5, help="how many top predictions to print")
    flag("allow_python_layers", type=bool_arg, default=True, metavar="true|false",
         help="false refuses a net with Python layers (they run the code they name)")
    flag("normalize", default="tile", choices=vis.NORMALIZE,
         help="scale each tile on its own (tile) or all together (global)")
    return p


def _mean(spec, channels):
    if not spec:
        return None
    if os.path.isfile(spec):
        if spec.endswith(".npy"):
            mean = np.load(spec, allow_pickle=False)
        else:
            from ..formats import read_binaryproto
            mean = io.blobproto_to_array(read_binaryproto(spec))[0]
        return mean.mean(axis=(1, 2)) if mean.ndim == 3 else mean
    try:
        values = np.array([float(v) for v in spec.split(",")], dtype=np.float32)
    except ValueError:
        raise CaffeError(f"-mean {spec}: not a file and not comma-separated numbers") from None
    if len(values) not in (1, channels):
        raise CaffeError(f"-mean {spec}: {len(values)} values for {channels} channels")
    return np.resize(values, channels)


def _feed(net, args):
    in_ = net.inputs[0] if net.inputs else None
    if in_ is None:
        raise CaffeError(f"{args.model}: no Input blob to feed the image to")
    shape = net.blobs[in_].data.shape
    transformer = io.Transformer({in_: shape})
    transformer.set_transpose(in_, (2, 0, 1))
    transformer.set_raw_scale(in_, args.raw_scale)
    if shape[1] == 3 and args.channel_swap:
        transformer.set_channel_swap(in_, tuple(int(c) for c in args.channel_swap.split(",")))
    mean = _mean(args.mean, shape[1])
    if mean is not None:
        transformer.set_mean(in_, mean)
    image = io.load_image(args.image, color=shape[1] == 3)
    image = io.resize_image(image, shape[2:])
    net.blobs[in_].data[...] = transformer.preprocess(in_, image)
    net.forward()


def _randomize(net):
    """Deploy prototxts name no fillers, so their weights start at 0: draw Xavier ones.

    A zero filter shows nothing; random weights still show the net's structure (how each
    layer mixes its inputs) and exercise every blob. Biases stay at their fillers' values.
    """
    from ..filler import fill
    filler = caffe_pb2.FillerParameter(type="xavier")
    drawn = []
    for name, layer in zip(net._layer_names, net._layers):
        if layer.blobs and layer.blobs[0].data.dim() >= 2 and \
                not bool(layer.blobs[0].data.any()):
            fill(layer.blobs[0].data, filler)
            drawn.append(name)
    if drawn:
        print(f"No -weights: Xavier-random weights for {', '.join(drawn[:8])}"
              f"{' ...' if len(drawn) > 8 else ''} (their prototxt names no filler)")


def _safe(name):
    return name.replace("/", "_").replace(os.sep, "_")


def _show(net, name, args, ran):
    out, written = args.output_dir, []
    params = net.params.get(name)
    if params and params[0].data.ndim == 4:
        weights = params[0].data
        path = os.path.join(out, f"{_safe(name)}_filters.png")
        written.append(vis.save_png(vis.filters_grid(weights, args.normalize), path))
        written.append(vis.blob_histogram(
            weights, os.path.join(out, f"{_safe(name)}_weights_hist.png"),
            title=f"{name} weights {tuple(weights.shape)}"))
    if name in net.blobs and ran:
        data = net.blobs[name].data
        path = os.path.join(out, f"{_safe(name)}.png")
        if data.ndim >= 3 and data[0].size > data.shape[1]:
            written.append(vis.save_png(vis.activations_grid(data, 0, args.normalize), path))
        else:
            written.append(vis.plot_vector(data[0], path, title=f"{name} {tuple(data.shape)}"))
        written.append(vis.blob_histogram(data[0], os.path.join(out, f"{_safe(name)}_hist.png"),
                                          title=f"{name} {tuple(data.shape)}: item 0, nonzero values",
                                          nonzero=True))
    elif name in net.blobs and not params:
        raise CaffeError(f"'{name}' is a blob: give -image to compute its activations")
    if not written and name not in net.blobs and not params:
        raise CaffeError(f"{args.model}: no layer or blob named '{name}' (blobs: "
                         f"{', '.join(list(net.blobs)[:12])}...)")
    return written


def main(argv=None):
    args = _parser().parse_args(gflags_argv(sys.argv[1:] if argv is None else argv,
                                            ("allow_python_layers",)))
    try:
        allowed = python_layers_allowed()
        set_python_layers_allowed(args.allow_python_layers)
        try:
            net = Net(args.model, caffe_pb2.TEST)
        finally:
            set_python_layers_allowed(allowed)
        if args.weights:
            net.copy_from(args.weights)
        else:
            _randomize(net)
        os.makedirs(args.output_dir, exist_ok=True)
        ran = bool(args.image)
        if ran:
            _feed(net, args)
        written = []
        for name in [n.strip() for n in args.blobs.split(",") if n.strip()]:
            written += _show(net, name, args, ran)
        if ran and net.outputs:
            scores = net.blobs[net.outputs[-1]].data
            if scores.ndim >= 2 and scores[0].size > 1:
                labels = vis.load_labels(args.labels) if args.labels else None
                best = vis.top_k(scores[0], labels, args.k)
                for label, p in best:
                    print(f"{p:.4f} - \"{label}\"")
                written.append(vis.plot_top_k(best, os.path.join(args.output_dir, "top_k.png"),
                                              title=f"top {args.k}: {net.outputs[-1]}"))
        for path in written:
            print(f"Wrote {path}")
        return 0
    except (CaffeError, OSError) as e:
        print(f"caffe vis: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
