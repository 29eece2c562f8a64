"""`caffe zoo`: list, describe, download and verify Caffe model-zoo models.

    caffe zoo list
    caffe zoo info NAME|DIR
    caffe zoo download NAME|DIR [-root models] [-mirror URL]
    caffe zoo verify DIR

A NAME is one of `caffe zoo list` (downloaded into ROOT/NAME with its readme.md and deploy
prototxt); a DIR is any BVLC-style model folder whose readme.md front matter names the
caffemodel, its caffemodel_url and sha1 (what scripts/download_model_binary.py reads).
"""
import argparse
import os
import sys

from .. import zoo


def _parser():
    p = argparse.ArgumentParser(prog="caffe zoo", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the models known by name")
    info = sub.add_parser("info", help="a model's front matter and local state")
    info.add_argument("target", metavar="NAME|DIR")
    info.add_argument("-root", "--root", default="models")
    down = sub.add_parser("download", help="fetch a model's files (resumes, checks sha1)")
    down.add_argument("target", metavar="NAME|DIR")
    down.add_argument("-root", "--root", default="models",
                      help="where NAME's folder goes (default ./models, as in BVLC's tree)")
    down.add_argument("-mirror", "--mirror", default=None,
                      help="base URL serving the same file names instead of the published "
                           "locations")
    check = sub.add_parser("verify", help="check a model folder's files against their sha1")
    check.add_argument("folder", metavar="DIR")
    return p


def _list():
    width = max(map(len, zoo.MODELS))
    for name, entry in zoo.MODELS.items():
        print(f"{name:<{width}}  {entry['name']}  [license: {entry['license']}]")
    return 0


def _info(target, root):
    if os.path.isdir(target):
        folder, meta = target, zoo.read_frontmatter(target)
    else:
        meta = zoo.info(target)
        folder = os.path.join(root, target)
    for key, value in meta.items():
        if value is not None:
            print(f"{key}: {value}")
    if os.path.isfile(os.path.join(folder, "readme.md")):
        for name, status, detail in zoo.verify(folder):
            print(f"local {os.path.join(folder, name)}: {status} ({detail})")
    return 0


def _verify(folder):
    bad = 0
    for name, status, detail in zoo.verify(folder):
        print(f"{os.path.join(folder, name)}: {status} ({detail})")
        bad += status in ("missing", "mismatch")
    return 1 if bad else 0


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.action == "list":
            return _list()
        if args.action == "info":
            return _info(args.target, args.root)
        if args.action == "download":
            folder = zoo.download(args.target, args.root, args.mirror)
            print(f"Model ready in {folder}")
            return 0
        return _verify(args.folder)
    except zoo.ZooError as e:
        print(f"caffe zoo: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
