"""Draw a network definition to an image: `python -m caffe.tools.draw_net net.prototxt net.png`.

The flags are those of Caffe's python/draw_net.py; the output format follows the file's
extension (png, svg, pdf, ..., or dot for the graphviz source).
"""
import argparse
import sys

from .. import draw, formats
from ..errors import CaffeError
from ..proto import caffe_pb2

PHASES = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="draw_net", description="Draw a network graph.",
                                     allow_abbrev=False,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("input_net_proto_file", help="Input network prototxt file")
    parser.add_argument("output_image_file", help="Output image file")
    parser.add_argument("--rankdir", default="LR",
                        help="One of TB (top-bottom, i.e. vertical), LR (left-right, i.e. "
                             "horizontal), BT or RL")
    parser.add_argument("--phase", default="ALL",
                        help="Which network phase to draw: TRAIN, TEST, or ALL. With ALL, "
                             "every layer is drawn regardless of phase.")
    parser.add_argument("--display_lrm", action="store_true",
                        help="Show the learning rate multipliers of layers that have them.")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.phase not in PHASES:
        print(f"draw_net: unknown phase '{args.phase}' (use TRAIN, TEST or ALL)",
              file=sys.stderr)
        return 2
    try:
        net = formats.read_net_param(args.input_net_proto_file)
        print(f"Drawing net to {args.output_image_file}")
        draw.draw_net_to_file(net, args.output_image_file, args.rankdir, PHASES[args.phase],
                              args.display_lrm)
    except CaffeError as e:
        print(f"draw_net: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
