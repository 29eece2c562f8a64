"""classify: BVLC's python/classify.py as a console script, with its flags.

    classify [FLAGS] input_file output_file

input_file is an image, a folder of images (--ext) or a .npy array of H x W x K images;
output_file gets the N x classes prediction array (np.save). Flags as BVLC's: --model_def,
--pretrained_model (default: the CaffeNet files under models/bvlc_reference_caffenet of the
current folder, a Caffe tree), --gpu, --center_only, --images_dim 256,256, --mean_file
(a K x H x W .npy; '' for none; default python/caffe/imagenet/ilsvrc_2012_mean.npy),
--input_scale, --raw_scale 255, --channel_swap 2,1,0 ('' for none), --ext jpg.
"""
import glob
import os
import time

import numpy as np

from .. import common, io
from ..classifier import Classifier
from .gflags import Parser, tool_main
from ..errors import CaffeError

CAFFENET = os.path.join("models", "bvlc_reference_caffenet")
IMAGENET_MEAN = os.path.join("python", "caffe", "imagenet", "ilsvrc_2012_mean.npy")


def parser():
    p = Parser(prog="classify", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input_file", help="Input image, directory, or npy.")
    p.add_argument("output_file", help="Output npy filename.")
    add_model_flags(p)
    p.add_bool("center_only", help="Switch for prediction from center crop alone instead of "
               "averaging predictions across crops (default).")
    p.add_argument("--images_dim", default="256,256",
                   help="Canonical 'height,width' dimensions of input images.")
    p.add_argument("--mean_file", default=IMAGENET_MEAN,
                   help="Data set image mean of [Channels x Height x Width] dimensions "
                   "(numpy array). Set to '' for no mean subtraction.")
    add_scale_flags(p)
    p.add_argument("--ext", default="jpg", help="Image file extension to take as input when "
                   "a directory is given as the input file.")
    return p


def add_model_flags(p):
    p.add_argument("--model_def", default=os.path.join(CAFFENET, "deploy.prototxt"),
                   help="Model definition file.")
    p.add_argument("--pretrained_model",
                   default=os.path.join(CAFFENET, "bvlc_reference_caffenet.caffemodel"),
                   help="Trained model weights file.")
    p.add_bool("gpu", help="Switch for gpu computation.")


def add_scale_flags(p):
    p.add_argument("--input_scale", type=float, default=None,
                   help="Multiply input features by this scale to finish preprocessing.")
    p.add_argument("--raw_scale", type=float, default=255.0,
                   help="Multiply raw input by this scale before preprocessing.")
    p.add_argument("--channel_swap", default="2,1,0", help="Order to permute input channels. "
                   "The default converts RGB -> BGR since BGR is the Caffe default by way of "
                   "OpenCV.")


def load_mean(path):
    if not path:
        return None
    if not os.path.isfile(path):
        raise CaffeError(f"mean file '{path}' not found (give --mean_file PATH, or "
                         f"--mean_file '' for no mean subtraction)")
    return np.load(path, allow_pickle=False)


def int_list(text):
    return [int(s) for s in text.split(",")] if text else None


def select_mode(gpu):
    if gpu:
        common.set_mode_gpu()
        print("GPU mode")
    else:
        common.set_mode_cpu()
        print("CPU mode")


def classify(args):
    image_dims = int_list(args.images_dim)
    mean = load_mean(args.mean_file)
    select_mode(args.gpu)
    classifier = Classifier(args.model_def, args.pretrained_model, image_dims=image_dims,
                            mean=mean, input_scale=args.input_scale, raw_scale=args.raw_scale,
                            channel_swap=int_list(args.channel_swap))
    input_file = os.path.expanduser(args.input_file)
    if input_file.endswith("npy"):
        print(f"Loading file: {input_file}")
        inputs = np.load(input_file, allow_pickle=False)
    elif os.path.isdir(input_file):
        print(f"Loading folder: {input_file}")
        inputs = [io.load_image(f) for f in glob.glob(input_file + "/*." + args.ext)]
    else:
        print(f"Loading file: {input_file}")
        inputs = [io.load_image(input_file)]
    print(f"Classifying {len(inputs)} inputs.")
    start = time.time()
    predictions = classifier.predict(inputs, not args.center_only)
    print(f"Done in {time.time() - start:.2f} s.")
    print(f"Saving results into {args.output_file}")
    np.save(args.output_file, predictions)
    return 0


main = tool_main(parser, classify)


if __name__ == "__main__":
    raise SystemExit(main())
