"""convert_imageset: images named by a list file into an LMDB/LevelDB of Datum records.

    convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE has one `path label` line per image (the label after the last space); each image is
read from ROOTFOLDER + path (string concatenation, as BVLC: end ROOTFOLDER with '/'). Records
get BVLC's keys `%08d_<path>` (the line number after an optional shuffle) and hold raw C x H x W
pixels (BGR for colour) or, with --encoded, the compressed image: the file's own bytes when it
is already in the requested format and is neither resized nor converted, else re-encoded.
Unreadable images are skipped with a warning and counted.
"""
import logging
import random

from tqdm import tqdm

from .gflags import Parser, tool_main
from ..data.db import image_to_datum, open_db
from ..data.image import check_resize, encode_image, read_image, read_image_bytes, read_image_list
from ..errors import DataError

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="convert_imageset", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("root_folder", metavar="ROOTFOLDER/")
    p.add_argument("list_file", metavar="LISTFILE")
    p.add_argument("db_name", metavar="DB_NAME")
    p.add_bool("gray", help="treat images as grayscale ones")
    p.add_bool("shuffle", help="randomly shuffle the order of images and their labels")
    p.add_argument("--backend", default="lmdb", help="the backend {lmdb, leveldb} for storing "
                   "the result (default lmdb)")
    p.add_argument("--resize_width", type=int, default=0, help="width images are resized to")
    p.add_argument("--resize_height", type=int, default=0, help="height images are resized to")
    p.add_bool("check_size", help="check that all the datum have the same size")
    p.add_bool("encoded", help="when true, the image data is encoded (png, jpg, ...)")
    p.add_argument("--encode_type", default="", help="optional: what type should we encode "
                   "the image as ('png','jpg',...)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of --shuffle (pycaffe extension; default: a random order)")
    return p


def _ext(path):
    dot = path.rfind(".")
    return path[dot + 1:].lower() if dot >= 0 else ""


def _datum(path, label, args, encoding):
    """Caffe's ReadImageToDatum; None when the image cannot be read (a warning is logged)."""
    color = not args.gray
    height, width = max(0, args.resize_height), max(0, args.resize_width)
    try:
        img = read_image(path, height, width, color)
        if not encoding:
            return image_to_datum(img, label)
        ext = _ext(path)
        same_format = ext == encoding or (encoding == "jpg" and ext == "jpeg")
        if (img.shape[2] == 3) == color and not height and not width and same_format:
            return image_to_datum(None, label, encoded=read_image_bytes(path))
        return image_to_datum(None, label, encoded=encode_image(img, encoding))
    except (DataError, OSError) as e:
        log.warning("skipping %s: %s", path, e)
        return None


def convert(args):
    lines = read_image_list(args.list_file)
    if args.shuffle:
        log.info("Shuffling data")
        random.Random(args.seed).shuffle(lines)
    log.info("A total of %d images.", len(lines))
    encoded = args.encoded or bool(args.encode_type)
    if args.encode_type and not args.encoded:
        log.info("encode_type specified, assuming encoded=true.")
    if args.resize_height and args.resize_width <= 0 or args.resize_width and \
            args.resize_height <= 0:
        log.warning("resize_height and resize_width must both be positive to resize; "
                    "images keep their size")
    if args.resize_height > 0 and args.resize_width > 0:
        # Refused before the database is created, not once per image.
        check_resize(args.resize_height, args.resize_width, "--resize_height x --resize_width")
    count, skipped, size = 0, 0, None
    with open_db(args.db_name, args.backend, "new") as db:
        for line_id, (path, label) in enumerate(tqdm(lines, desc="convert_imageset",
                                                     unit="img", disable=None)):
            encoding = args.encode_type.lower()
            if encoded and not encoding:
                encoding = _ext(path)
                if not encoding:
                    log.warning("skipping %s: cannot guess its encoding from the file name", path)
                    skipped += 1
                    continue
            datum = _datum(args.root_folder + path, label, args, encoding if encoded else "")
            if datum is None:
                skipped += 1
                continue
            if args.check_size:
                this = len(datum.data)
                if size is not None and this != size:
                    raise DataError(f"{path}: incorrect data field size {this} (the first image "
                                    f"had {size}); all images must have one size with "
                                    f"--check_size")
                size = this if size is None else size
            db.put(f"{line_id:08d}_{path}", datum.SerializeToString())
            count += 1
            if count % 1000 == 0:
                db.commit()
                log.info("Processed %d files.", count)
    if count % 1000:
        log.info("Processed %d files.", count)
    if skipped:
        hint = "" if args.root_folder.endswith(("/", "\\")) or not args.root_folder else \
            f" (ROOTFOLDER '{args.root_folder}' has no trailing '/': paths are joined as text)"
        log.warning("%d of %d images could not be read and were skipped%s", skipped,
                    len(lines), hint)
    if lines and not count:
        raise DataError(f"no image of {args.list_file} could be read; {args.db_name} is empty")
    return 0


main = tool_main(parser, convert)


if __name__ == "__main__":
    raise SystemExit(main())
