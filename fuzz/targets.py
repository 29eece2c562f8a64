"""The fuzz targets: one function per reader of outside data, bytes in, nothing out.

A target feeds its bytes to one reader (and to the code that consumes what the reader
returns, as loading a model or a batch would) and lets only caffe.errors.CaffeError escape:
any other exception, a crash, a hang or a runaway allocation is a bug. The same functions
serve the atheris harness (fuzz/harness.py), the hypothesis fallback (fuzz/hypo.py) and the
corpus replay test (tests/test_fuzz_corpora.py).

Readers that take a path get the bytes written to a file in a scratch folder (tmpfs when
there is one); database targets decode the bytes into records (see `split_records`).
"""
import logging
import os
import shutil
import struct
import tempfile
import warnings

import numpy as np

# Limits while fuzzing: a fuzzed net may ask for any blob under the limit, and with the
# default (2^31 - 1 elements, as Caffe) a few such blobs would exhaust the machine.
FUZZ_MAX_BLOB_COUNT = 1 << 22
FUZZ_MAX_IMAGE_PIXELS = 1 << 22

TARGETS = {}

_state = {}


def target(func):
    TARGETS[func.__name__] = func
    return func


def setup(workdir=None):
    """Prepare the process for fuzzing (idempotent): quiet logs, lower limits, scratch files."""
    if _state.get("ready"):
        return _state["work"]
    import caffe
    from caffe import blob
    from caffe.data import image
    from caffe.layers import python_layer
    logger = logging.getLogger("caffe")
    _state["saved"] = (logger.level, python_layer.python_layers_allowed(), blob.MAX_BLOB_COUNT,
                       image.MAX_IMAGE_PIXELS, list(warnings.filters))
    logger.setLevel(logging.CRITICAL + 1)
    from PIL import Image
    # Pillow warns about every would-be bomb before our own limit refuses it.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    caffe.set_python_layers_allowed(False)
    blob.MAX_BLOB_COUNT = FUZZ_MAX_BLOB_COUNT
    image.MAX_IMAGE_PIXELS = FUZZ_MAX_IMAGE_PIXELS
    if workdir is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) \
            else None
        workdir = tempfile.mkdtemp(prefix="caffe-fuzz-", dir=base)
        import atexit
        atexit.register(shutil.rmtree, workdir, True)
    os.makedirs(workdir, exist_ok=True)
    _state.update(work=workdir, ready=True)
    _make_images(os.path.join(workdir, "img"))
    return workdir


def teardown():
    """Undo setup() (tests run the targets inside a process that goes on)."""
    if not _state.get("ready"):
        return
    import caffe
    from caffe import blob
    from caffe.data import image
    level, allowed, blob.MAX_BLOB_COUNT, image.MAX_IMAGE_PIXELS, filters = _state["saved"]
    logging.getLogger("caffe").setLevel(level)
    caffe.set_python_layers_allowed(allowed)
    warnings.filters[:] = filters
    _state.clear()
    _params.clear()


def _path(name):
    return os.path.join(_state["work"], name)


def _write(name, data):
    path = _path(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def _make_images(folder):
    """The images that fuzzed image lists and window files may name: a.png, b.jpg, c.bmp."""
    from caffe.data.image import encode_image
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (12, 9, 1), dtype=np.uint8)
    for name, img in (("a.png", colour), ("b.jpg", grey), ("c.bmp", colour[:5])):
        with open(os.path.join(folder, name), "wb") as f:
            f.write(encode_image(img, name.rsplit(".", 1)[1]))


def _options(data):
    """The first byte chooses reader options; the rest is the input proper."""
    return (data[0] if data else 0), data[1:]


# -- prototxt ------------------------------------------------------------------------------
# Layers whose construction touches files named in the definition: their readers have targets
# of their own, and HDF5Output would create files wherever the definition says.
_FILE_LAYERS = {"Data", "ImageData", "WindowData", "HDF5Data", "HDF5Output", "Python"}


@target
def net_prototxt(data):
    """A net definition: parse (text or binary) and upgrade from V0/V1/legacy inputs."""
    from caffe import formats
    formats.read_net_param(_write("net.prototxt", data))


@target
def net_build(data):
    """A net definition built in TEST phase: every layer's setup on the values it declares."""
    import torch

    from caffe import TEST, Net, formats
    param = formats.read_net_param(_write("net.prototxt", data))
    if any(layer.type in _FILE_LAYERS for layer in param.layer):
        return
    Net(param, phase=TEST, dtype=torch.float32, device="cpu")


@target
def solver_prototxt(data):
    """A solver definition: parse, upgrade, apply the snapshot-prefix rule."""
    from caffe.solvers import read_solver
    read_solver(_write("solver.prototxt", data))


# -- weights -------------------------------------------------------------------------------
FIXTURE_NET = """
name: "fixture"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2" param { name: "shared" }
        inner_product_param { num_output: 3 bias_term: false } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip2" top: "ip3" param { name: "shared" }
        inner_product_param { num_output: 3 bias_term: false } }
"""


def fixture_net():
    """The net every weights target loads into (built once per process)."""
    if "net" not in _state:
        import torch

        from caffe import TEST, Net, formats
        from caffe.proto import caffe_pb2
        param = formats.parse_text(FIXTURE_NET, caffe_pb2.NetParameter())
        _state["net"] = Net(param, phase=TEST, dtype=torch.float32, device="cpu")
    return _state["net"]


@target
def caffemodel(data):
    """Binary weights (.caffemodel, any version) copied into the fixture net."""
    fixture_net().copy_from(_write("w.caffemodel", data))


@target
def caffemodel_h5(data):
    """HDF5 weights (.caffemodel.h5) copied into the fixture net."""
    fixture_net().copy_from(_write("w.caffemodel.h5", data))


FIXTURE_SOLVER = """
type: "{type}" base_lr: 0.1 momentum: 0.9 lr_policy: "step" stepsize: 3 gamma: 0.5
max_iter: 10 snapshot_prefix: "{prefix}" snapshot_format: {fmt}
net_param {{ {net}
  layer {{ name: "target" type: "DummyData" top: "target"
           dummy_data_param {{ shape {{ dim: 2 dim: 3 }} }} }}
  layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip3" bottom: "target" top: "loss" }}
}}
"""


def fixture_solver(fmt):
    """An SGD (binary states) or Adam (HDF5 states) solver over the fixture net."""
    key = "solver_" + fmt
    if key not in _state:
        import torch

        from caffe import formats
        from caffe.proto import caffe_pb2
        from caffe.solvers import get_solver
        text = FIXTURE_SOLVER.format(type="SGD" if fmt == "BINARYPROTO" else "Adam",
                                     prefix=_path("snap"), fmt=fmt, net=FIXTURE_NET)
        param = formats.parse_text(text, caffe_pb2.SolverParameter())
        solver = get_solver(param, dtype=torch.float32, device="cpu")
        solver.step(2)
        # The weights file the seeds' learned_net names, beside the states the target writes.
        solver.net.save(_path("snap_iter_2.caffemodel"))
        solver.net.save(_path("snap_iter_2.caffemodel.h5"))
        _state[key] = solver
    return _state[key]


@target
def solverstate(data):
    """A binary .solverstate restored into an SGD solver (history, iteration, learned_net)."""
    fixture_solver("BINARYPROTO").restore(_write("s.solverstate", data))


@target
def solverstate_h5(data):
    """An HDF5 .solverstate.h5 restored into an Adam solver."""
    fixture_solver("HDF5").restore(_write("s.solverstate.h5", data))


@target
def binaryproto(data):
    """A BlobProto file (mean image): as a mean file, and through pycaffe's converters."""
    from caffe import io as cio
    from caffe.data.transformer import load_mean
    from caffe.errors import ProtoError
    from caffe.formats import parse_binary
    from caffe.proto import caffe_pb2
    path = _write("mean.binaryproto", data)
    try:
        load_mean(path)
    except ProtoError:
        pass
    blob = parse_binary(data, caffe_pb2.BlobProto(), path)
    cio.blobproto_to_array(blob)
    if len(blob.diff) or len(blob.double_diff):
        cio.blobproto_to_array(blob, return_diff=True)


# -- records and images --------------------------------------------------------------------
@target
def datum(data):
    """A Datum record (raw, float or encoded) decoded as the data layers and pycaffe do."""
    from caffe import io as cio
    from caffe.data import db
    from caffe.errors import CaffeError
    d = db.parse_datum(data, b"key")
    failure = None
    for color in (None, True, False):
        try:
            db.datum_to_array(d, b"key", color)
        except CaffeError as e:
            failure = e
        if not d.encoded:
            break
    cio.datum_to_array(d)
    if failure is not None:
        raise failure


@target
def image(data):
    """Encoded image bytes: Caffe's imdecode and pycaffe's load_image."""
    from caffe import io as cio
    from caffe.data.image import decode_image, read_image
    from caffe.errors import CaffeError
    options, data = _options(data)
    color = (None, True, False)[options % 3]
    decode_image(data, color)
    path = _write("image.bin", data)
    try:
        read_image(path, 1 + options % 5, 1 + options % 7, bool(options & 8))
    except CaffeError:
        pass
    cio.load_image(path, color=bool(options & 16))


def split_records(data):
    """Records from bytes: repeated [key length: 1 byte][key][value length: 2 bytes LE][value].

    A truncated last record keeps what is there. Keys and values are otherwise arbitrary.
    """
    records, pos = [], 0
    while pos < len(data):
        klen = data[pos]
        key = data[pos + 1:pos + 1 + klen]
        pos += 1 + klen
        if pos + 2 <= len(data):
            (vlen,) = struct.unpack_from("<H", data, pos)
            pos += 2
        else:
            vlen, pos = 0, len(data)
        records.append((bytes(key), bytes(data[pos:pos + vlen])))
        pos += vlen
    return records


def join_records(records):
    """The inverse of split_records (the seeds are written with it)."""
    out = bytearray()
    for key, value in records:
        out += bytes([len(key)]) + key + struct.pack("<H", len(value)) + value
    return bytes(out)


def _transform(options):
    crop = (0, 0, 2, 5)[options & 3]
    parts = [f"crop_size: {crop}" if crop else "", "mirror: true" if options & 4 else "",
             "mean_value: 10" if options & 8 else "", "force_gray: true" if options & 16 else ""]
    return "transform_param { scale: 0.01 " + " ".join(parts) + " }"


_params = {}


def _data_layer(text, phase):
    import torch

    from caffe import TEST, TRAIN
    from caffe.blob import Blob
    from caffe.testing import make_layer
    # Parsing the layer's own text is harness work: done once per distinct option set.
    key = (text, bool(phase))
    if key not in _params:
        from caffe.testing import layer_param
        _params[key] = layer_param(text, phase=TRAIN if phase else TEST)
    layer = make_layer(_params[key], dtype=torch.float32)
    top = [Blob(), Blob()]
    try:
        layer.layer_setup([], top)
        for _ in range(3):
            layer.forward([], top)
    finally:
        prefetcher = getattr(layer, "prefetcher", None)
        if prefetcher is not None:
            prefetcher.close()


def _db_target(data, backend):
    from caffe.data.db import open_db
    options, data = _options(data)
    path = _path(backend)
    shutil.rmtree(path, ignore_errors=True)
    records = split_records(data)
    if backend == "lmdb":
        # LMDB cannot store an empty key or one over 511 bytes: no database can hold those.
        records = [(k, v) for k, v in records if 0 < len(k) <= 511]
    with open_db(path, backend, "new") as db:
        for key, value in records:
            db.put(key, value)
    _data_layer(f'type: "Data" top: "data" top: "label" data_param {{ source: "{path}" '
                f'backend: {backend.upper()} batch_size: {1 + (options >> 5) % 3} prefetch: 0 '
                f'force_encoded_color: {str(bool(options & 64)).lower()} }} {_transform(options)}',
                options & 128)


@target
def lmdb(data):
    """Datum records with odd keys and values in an LMDB, read by a Data layer."""
    _db_target(data, "lmdb")


@target
def leveldb(data):
    """Datum records with odd keys and values in a LevelDB, read by a Data layer."""
    _db_target(data, "leveldb")


@target
def hdf5_data(data):
    """An HDF5 data file read by an HDF5Data layer (tops 'data' and 'label')."""
    options, data = _options(data)
    h5 = _write("data.h5", data)
    source = _write("h5list.txt", (h5 + "\n").encode())
    _data_layer(f'type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ '
                f'source: "{source}" batch_size: {1 + options % 5} '
                f'shuffle: {str(bool(options & 8)).lower()} }}', options & 16)


@target
def image_list(data):
    """An image list ('path label' lines) read by an ImageData layer."""
    options, data = _options(data)
    source = _write("list.txt", data)
    size = f"new_height: {1 + options % 4} new_width: {2 + options % 3}" if options & 32 else ""
    _data_layer(f'type: "ImageData" top: "data" top: "label" image_data_param {{ '
                f'source: "{source}" root_folder: "{_path("img")}/" batch_size: 2 {size} '
                f'shuffle: {str(bool(options & 64)).lower()} '
                f'is_color: {str(not options & 128).lower()} }} '
                f'data_param {{ prefetch: 0 }} {_transform(options)}', options & 16)


@target
def window_file(data):
    """An R-CNN window file read by a WindowData layer."""
    options, data = _options(data)
    source = _write("windows.txt", data)
    _data_layer(f'type: "WindowData" top: "data" top: "label" window_data_param {{ '
                f'source: "{source}" root_folder: "{_path("img")}/" batch_size: 3 '
                f'fg_threshold: 0.5 bg_threshold: 0.5 fg_fraction: 0.34 '
                f'context_pad: {options % 2} crop_mode: "{("warp", "square")[(options >> 1) & 1]}" '
                f'cache_images: {str(bool(options & 4)).lower()} }} '
                f'data_param {{ prefetch: 0 }} '
                f'transform_param {{ crop_size: 4 mirror: {str(bool(options & 8)).lower()} }}',
                options & 16)


def run(name, data):
    """Run one input through a target; CaffeError is the expected way to refuse it."""
    from caffe.errors import CaffeError
    try:
        TARGETS[name](data)
    except CaffeError:
        pass
