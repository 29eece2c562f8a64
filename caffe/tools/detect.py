"""detect: BVLC's python/detect.py as a console script, with its flags.

    detect [FLAGS] input_file output_file

input_file is a .txt list of image files (for --crop_mode selective_search) or a .csv with
the header `filename,xmin,ymin,xmax,ymax` (for --crop_mode list, one window per row).
output_file (.csv or .h5) gets one row per window: filename, ymin, xmin, ymax, xmax and the
net's outputs class0 ... classN-1. The .h5 holds the datasets filename, window (N x 4) and
prediction (N x classes), written with h5py (BVLC wrote a pandas table with PyTables).
Flags as BVLC's: --model_def, --pretrained_model, --crop_mode {list,selective_search},
--gpu, --mean_file (its per-channel mean is used), --input_scale, --raw_scale 255,
--channel_swap 2,1,0, --context_pad 16.
"""
import csv
import os
import time

import numpy as np

from .gflags import Parser, tool_main
from ..detector import Detector
from ..errors import CaffeError
from ..formats import atomic_write
from .classify import (IMAGENET_MEAN, add_model_flags, add_scale_flags, int_list, load_mean,
                       select_mode)

CROP_MODES = ["list", "selective_search"]
COORD_COLS = ["ymin", "xmin", "ymax", "xmax"]


def parser():
    p = Parser(prog="detect", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("input_file", help="Input txt/csv filename. If .txt, must be list of "
                   "filenames. If .csv, must be comma-separated file with header "
                   "'filename, xmin, ymin, xmax, ymax'")
    p.add_argument("output_file", help="Output h5/csv filename. Format depends on extension.")
    add_model_flags(p)
    p.add_argument("--crop_mode", default="selective_search", choices=CROP_MODES,
                   help="How to generate windows for detection.")
    p.add_argument("--mean_file", default=IMAGENET_MEAN,
                   help="Data set image mean of H x W x K dimensions (numpy array). Set to '' "
                   "for no mean subtraction.")
    add_scale_flags(p)
    p.add_argument("--context_pad", type=int, default=16,
                   help="Amount of surrounding context to collect in input window.")
    return p


def read_windows(path):
    """[(filename, [[ymin, xmin, ymax, xmax], ...]), ...] from the .csv, files in order."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f, skipinitialspace=True))
    missing = [c for c in ["filename"] + COORD_COLS if rows and c not in rows[0]]
    if missing:
        raise CaffeError(f"{path}: the header lacks {', '.join(missing)} (need filename, "
                         f"xmin, ymin, xmax, ymax)")
    windows = {}
    for line, row in enumerate(rows, start=2):
        try:
            box = [float(row[c]) for c in COORD_COLS]
        except (TypeError, ValueError):
            raise CaffeError(f"{path}:{line}: window coordinates must be numbers") from None
        windows.setdefault(row["filename"], []).append(box)
    return [(name, np.array(boxes)) for name, boxes in windows.items()]


def write_detections(path, detections):
    names = [d["filename"] for d in detections]
    windows = np.array([np.asarray(d["window"])[:4] for d in detections]).reshape(-1, 4)
    predictions = np.array([np.ravel(d["prediction"]) for d in detections])
    if path.lower().endswith("csv"):
        classes = predictions.shape[1] if predictions.ndim == 2 else 0

        def write(f):
            text = f"filename,{','.join(COORD_COLS)}," + \
                ",".join(f"class{k}" for k in range(classes)) + "\n"
            for name, box, pred in zip(names, windows, predictions):
                text += ",".join([name] + [repr(float(v)) for v in box] +
                                 [repr(float(v)) for v in pred]) + "\n"
            f.write(text.encode())
        atomic_write(path, write)
    else:
        import h5py
        tmp = path + ".tmp"
        with h5py.File(tmp, "w") as h5:
            h5["filename"] = np.array(names, dtype=h5py.string_dtype())
            h5["window"] = windows
            h5["prediction"] = predictions
        os.replace(tmp, path)


def detect(args):
    mean = load_mean(args.mean_file)
    if mean is not None and mean.shape[1:] != (1, 1):
        mean = mean.mean(1).mean(1)
    select_mode(args.gpu)
    detector = Detector(args.model_def, args.pretrained_model, mean=mean,
                        input_scale=args.input_scale, raw_scale=args.raw_scale,
                        channel_swap=int_list(args.channel_swap), context_pad=args.context_pad)
    t = time.time()
    print("Loading input...")
    lower = args.input_file.lower()
    if not (lower.endswith("txt") or lower.endswith("csv")):
        raise CaffeError(f"{args.input_file}: unknown input file type: not in txt or csv.")
    if args.crop_mode == "list":
        if not lower.endswith("csv"):
            raise CaffeError("--crop_mode list needs a .csv of windows")
        detections = detector.detect_windows(read_windows(args.input_file))
    elif lower.endswith("csv"):
        detections = detector.detect_selective_search(
            [name for name, _ in read_windows(args.input_file)])
    else:
        with open(args.input_file) as f:
            inputs = [line.strip() for line in f if line.strip()]
        detections = detector.detect_selective_search(inputs)
    print(f"Processed {len(detections)} windows in {time.time() - t:.3f} s.")
    t = time.time()
    write_detections(args.output_file, detections)
    print(f"Saved to {args.output_file} in {time.time() - t:.3f} s.")
    return 0


main = tool_main(parser, detect)


if __name__ == "__main__":
    raise SystemExit(main())
