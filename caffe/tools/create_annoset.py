"""create_annoset: images and their box annotations into an LMDB/LevelDB of AnnotatedDatum
records, for SSD's AnnotatedData layer (the SSD fork's convert_annoset).

    create_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE has one `image annotation` line per image, both paths relative to ROOTFOLDER. An
annotation is a PASCAL VOC XML file (--label_type xml) or a JSON file (--label_type json)
holding {"image": {"width", "height"}, "annotation": [{"bbox": [x, y, w, h],
"category_id", "iscrowd"}]}, or a COCO instances file's entry in that shape. Class names (VOC
`name`, or str(category_id)) become labels through --label_map_file (a LabelMap prototxt).
Boxes are stored normalised by the image size, grouped by label; keys are `%08d_<image>`.
"""
import json
import logging
import xml.etree.ElementTree as ET

from tqdm import tqdm

from .gflags import Parser, tool_main
from ..data.db import image_to_datum, open_db
from ..data.image import check_resize, read_image
from ..errors import DataError
from ..formats import parse_text
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="create_annoset", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("root_folder", metavar="ROOTFOLDER/")
    p.add_argument("list_file", metavar="LISTFILE")
    p.add_argument("db_name", metavar="DB_NAME")
    p.add_argument("--anno_type", default="detection", help="detection (boxes)")
    p.add_argument("--label_type", default="xml", help="xml (VOC) or json")
    p.add_argument("--label_map_file", default="", help="a LabelMap prototxt")
    p.add_bool("encoded", help="store the image file's bytes instead of raw pixels")
    p.add_argument("--encode_type", default="", help="kept for the fork's flags; the file's "
                   "own encoding is stored")
    p.add_argument("--backend", default="lmdb", help="lmdb or leveldb")
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--resize_height", type=int, default=0)
    p.add_bool("gray", help="treat images as grayscale ones")
    p.add_bool("check_label", help="check that no two classes share a label")
    return p


def read_label_map(path):
    if not path:
        return {}
    with open(path) as f:
        label_map = parse_text(f.read(), caffe_pb2.LabelMap(), path)
    return {item.name: item.label for item in label_map.item}


def _label(name, labels, where):
    if name in labels:
        return labels[name]
    if not labels and str(name).lstrip("-").isdigit():
        return int(name)
    raise DataError(f"{where}: class '{name}' is not in the label map")


def read_voc(path, labels):
    """(width, height, [(label, difficult, xmin, ymin, xmax, ymax)]) of a VOC XML file."""
    root = ET.parse(path).getroot()
    size = root.find("size")
    width, height = int(size.find("width").text), int(size.find("height").text)
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        difficult = obj.find("difficult")
        coords = [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        boxes.append((_label(obj.find("name").text, labels, path),
                      bool(int(difficult.text)) if difficult is not None else False, *coords))
    return width, height, boxes


def read_json(path, labels):
    with open(path) as f:
        doc = json.load(f)
    width, height = int(doc["image"]["width"]), int(doc["image"]["height"])
    boxes = []
    for a in doc.get("annotation", []):
        x, y, w, h = (float(v) for v in a["bbox"])
        boxes.append((_label(str(a["category_id"]), labels, path), bool(a.get("iscrowd", 0)),
                      x, y, x + w, y + h))
    return width, height, boxes


def annotated_datum(datum, width, height, boxes):
    record = caffe_pb2.AnnotatedDatum(type=caffe_pb2.AnnotatedDatum.BBOX)
    record.datum.CopyFrom(datum)
    groups = {}
    for label, difficult, x0, y0, x1, y1 in boxes:
        if label not in groups:
            groups[label] = record.annotation_group.add(group_label=label)
        group = groups[label]
        anno = group.annotation.add(instance_id=len(group.annotation))
        anno.bbox.CopyFrom(caffe_pb2.NormalizedBBox(
            xmin=x0 / width, ymin=y0 / height, xmax=x1 / width, ymax=y1 / height,
            difficult=difficult))
    return record


def convert(args):
    labels = read_label_map(args.label_map_file)
    if args.check_label and len(set(labels.values())) != len(labels):
        raise DataError(f"{args.label_map_file}: two classes share a label")
    read = {"xml": read_voc, "json": read_json}.get(args.label_type)
    if read is None:
        raise DataError(f"unknown --label_type '{args.label_type}' (xml or json)")
    with open(args.list_file) as f:
        pairs = [line.split() for line in f if line.strip()]
    if any(len(p) != 2 for p in pairs):
        raise DataError(f"{args.list_file}: each line needs `image annotation`")
    if args.resize_height > 0 and args.resize_width > 0:
        # Refused before the database is created, not once per image.
        check_resize(args.resize_height, args.resize_width, "--resize_height x --resize_width")
    count = 0
    with open_db(args.db_name, args.backend, "new") as db:
        for i, (image, anno) in enumerate(tqdm(pairs, desc="create_annoset", disable=None)):
            path = args.root_folder + image
            width, height, boxes = read(args.root_folder + anno, labels)
            if args.encoded and not (args.resize_height or args.resize_width):
                with open(path, "rb") as f:
                    datum = image_to_datum(None, 0, encoded=f.read())
            else:
                img = read_image(path, args.resize_height, args.resize_width, not args.gray)
                datum = image_to_datum(img, 0)
            record = annotated_datum(datum, width, height, boxes)
            db.put(f"{i:08d}_{image}", record.SerializeToString())
            count += 1
    log.info("Processed %d files.", count)
    return 0


main = tool_main(parser, convert)


if __name__ == "__main__":
    raise SystemExit(main())
