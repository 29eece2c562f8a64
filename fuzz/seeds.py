"""Write the seed corpora (fuzz/corpus/<target>/seed-*) with the project's own writers.

    python -m fuzz.seeds          # (re)writes the seed-* files; regress-* files are kept

Seeds are small valid (and a few almost valid) inputs: mutations of them reach deep into
each reader quickly. Files named regress-* are inputs that once failed; they stay forever.
"""
import io
import os
import sys

import h5py
import numpy as np

from . import targets

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")

NETS = {
    "current": targets.FIXTURE_NET,
    "conv_pool": """
name: "small"
layer { name: "in" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } shape { dim: 2 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 1 group: 1
                            weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "lrn" type: "LRN" bottom: "pool" top: "lrn" lrn_param { local_size: 3 } }
layer { name: "drop" type: "Dropout" bottom: "lrn" top: "lrn" }
layer { name: "ip" type: "InnerProduct" bottom: "lrn" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc"
        include { phase: TEST } }
""",
    "legacy_input": """
name: "legacy"
input: "data"
input_dim: 1 input_dim: 2 input_dim: 5 input_dim: 5
layers { name: "conv" type: CONVOLUTION bottom: "data" top: "conv" blobs_lr: 1 blobs_lr: 2
         weight_decay: 1 weight_decay: 0 convolution_param { num_output: 3 kernel_size: 2 } }
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers { name: "flat" type: FLATTEN bottom: "conv" top: "flat" }
layers { name: "prob" type: SOFTMAX bottom: "flat" top: "prob" }
""",
    "v0": """
name: "v0"
input: "data"
input_dim: 1 input_dim: 1 input_dim: 6 input_dim: 6
layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "pad" }
layers { layer { name: "conv" type: "conv" num_output: 2 kernelsize: 3 stride: 1 }
         bottom: "pad" top: "conv" }
layers { layer { name: "pool" type: "pool" pool: AVE kernelsize: 2 stride: 2 }
         bottom: "conv" top: "pool" }
""",
    "shapes": """
layer { name: "d" type: "DummyData" top: "a" top: "b"
        dummy_data_param { shape { dim: 2 dim: 3 dim: 4 } shape { dim: 2 dim: 3 dim: 4 }
                           data_filler { type: "uniform" } } }
layer { name: "e" type: "Eltwise" bottom: "a" bottom: "b" top: "e"
        eltwise_param { operation: SUM coeff: 1 coeff: -1 } }
layer { name: "c" type: "Concat" bottom: "a" bottom: "e" top: "c" concat_param { axis: 1 } }
layer { name: "s" type: "Slice" bottom: "c" top: "s1" top: "s2"
        slice_param { axis: 1 slice_point: 2 } }
layer { name: "r" type: "Reshape" bottom: "s1" top: "r" reshape_param { shape { dim: 0 dim: -1 } } }
layer { name: "p" type: "Permute" bottom: "s2" top: "p" }
layer { name: "bn" type: "BatchNorm" bottom: "s2" top: "bn"
        param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }
layer { name: "sil" type: "Silence" bottom: "r" }
""",
    "recurrent": """
layer { name: "x" type: "Input" top: "x" top: "cont"
        input_param { shape { dim: 3 dim: 2 dim: 4 } shape { dim: 3 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
        recurrent_param { num_output: 5 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "emb" type: "Embed" bottom: "cont" top: "emb"
        embed_param { num_output: 2 input_dim: 4 } }
""",
    "huge": """
layer { name: "in" type: "Input" top: "data"
        input_param { shape { dim: 1000000 dim: 1000000 } } }
""",
    "typo": 'layer { name: "in" tpye: "Input" top: "data" }\n',
}

SOLVERS = {
    "sgd": 'net: "net.prototxt"\ntest_iter: 10\ntest_interval: 100\nbase_lr: 0.01\n'
           'momentum: 0.9\nweight_decay: 0.0005\nlr_policy: "inv"\ngamma: 0.0001\npower: 0.75\n'
           'display: 100\nmax_iter: 1000\nsnapshot: 500\nsnapshot_prefix: "snap/lenet"\n'
           'solver_mode: CPU\n',
    "old_type": 'train_net: "a.prototxt"\ntest_net: "b.prototxt"\ntest_iter: 1\n'
                'test_interval: 5\nbase_lr: 0.1\nlr_policy: "multistep"\nstepvalue: 10\n'
                'stepvalue: 20\nsolver_type: ADAM\nmomentum2: 0.999\ndelta: 1e-8\n'
                'snapshot_format: HDF5\n',
    "both_types": 'type: "SGD"\nsolver_type: NESTEROV\nnet: "x"\n',
    "inline": 'base_lr: 0.5\ntype: "AdaDelta"\nnet_param { layer { name: "d" type: "DummyData" '
              'top: "d" dummy_data_param { shape { dim: 1 } } } }\ntrain_state { stage: "a" }\n'
              'clip_gradients: 10\niter_size: 2\naverage_loss: 3\n',
}


def _net(name):
    from caffe import formats
    from caffe.proto import caffe_pb2
    return formats.parse_text(NETS[name], caffe_pb2.NetParameter())


def _png(img, ext="png"):
    from caffe.data.image import encode_image
    return encode_image(img, ext)


def _images():
    rng = np.random.default_rng(1)
    colour = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, (6, 4, 1), dtype=np.uint8)
    out = {"colour.png": _png(colour), "grey.png": _png(grey), "colour.jpg": _png(colour, "jpg"),
           "grey.jpg": _png(grey, "jpg"), "colour.bmp": _png(colour, "bmp"),
           "grey.pgm": _png(grey, "pgm"), "colour.tif": _png(colour, "tiff")}
    from PIL import Image
    for mode, name in (("P", "palette.png"), ("RGBA", "alpha.png"), ("I;16", "grey16.png"),
                       ("LA", "grey_alpha.png"), ("1", "bilevel.png")):
        img = Image.fromarray(colour).convert(mode if mode != "I;16" else "I")
        if mode == "I;16":
            img = Image.fromarray(grey[:, :, 0].astype(np.uint16) * 257)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out[name] = buf.getvalue()
    buf = io.BytesIO()
    Image.fromarray(colour).save(buf, format="GIF")
    out["colour.gif"] = buf.getvalue()
    out["bomb.png"] = png_bomb(100000, 100000)
    return out


def png_bomb(width, height):
    """A valid-looking PNG of a few hundred bytes whose header declares width x height."""
    import struct
    import zlib

    def chunk(kind, payload):
        body = kind + payload
        return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # A few rows of zeros; the decoder would have to allocate the whole image first.
    rows = zlib.compress(b"\0" * (width + 1) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + \
        chunk(b"IEND", b"")


def _datums():
    from caffe.data.db import array_to_datum, image_to_datum
    rng = np.random.default_rng(2)
    raw = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    images = _images()
    out = {"raw": array_to_datum(raw, 3), "grey": array_to_datum(raw[:1], 1),
           "float": array_to_datum(rng.standard_normal((2, 3, 3)).astype(np.float32), 7),
           "png": image_to_datum(None, 4, encoded=images["colour.png"]),
           "jpg": image_to_datum(None, 5, encoded=images["grey.jpg"]),
           "bmp": image_to_datum(None, 6, encoded=images["colour.bmp"])}
    huge = array_to_datum(raw, 0)
    huge.channels, huge.height, huge.width = 1000000, 1000000, 1000000
    out["huge_declared"] = huge
    return {k: v.SerializeToString() for k, v in out.items()}


def _h5(write):
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        write(f)
    return buf.getvalue()


def _blobprotos():
    from caffe import io as cio
    rng = np.random.default_rng(3)
    mean = cio.array_to_blobproto(rng.uniform(0, 255, (1, 3, 4, 5)))
    legacy = cio.array_to_blobproto(rng.uniform(0, 255, (1, 1, 2, 3)))
    legacy.ClearField("shape")
    legacy.num, legacy.channels, legacy.height, legacy.width = 1, 1, 2, 3
    double = cio.array_to_blobproto(np.zeros((1, 2, 2, 2)))
    double.double_data.extend(double.data)
    double.ClearField("data")
    with_diff = cio.array_to_blobproto(np.ones((2, 3)), np.full((2, 3), 0.5))
    huge = cio.array_to_blobproto(np.ones(1))
    huge.shape.dim[:] = [1000000, 1000000]
    return {"mean": mean.SerializeToString(), "legacy": legacy.SerializeToString(),
            "double": double.SerializeToString(), "diff": with_diff.SerializeToString(),
            "huge_declared": huge.SerializeToString()}


def _weights(work):
    import torch

    from caffe import TEST, Net
    from caffe.layer import blob_to_proto
    from caffe.proto import caffe_pb2
    net = targets.fixture_net()
    out = {}
    net.save(os.path.join(work, "w.caffemodel"))
    out["current"] = net.to_proto().SerializeToString()
    out["with_diff"] = net.to_proto(write_diff=True).SerializeToString()
    # The same weights in the V1 format (`layers`, enum types, 4-D legacy dims).
    v1 = caffe_pb2.NetParameter(name="fixture")
    types = {"Convolution": caffe_pb2.V1LayerParameter.CONVOLUTION,
             "InnerProduct": caffe_pb2.V1LayerParameter.INNER_PRODUCT}
    for layer in net.to_proto().layer:
        if layer.type not in types:
            continue
        old = v1.layers.add(name=layer.name, type=types[layer.type])
        for blob in layer.blobs:
            proto = old.blobs.add()
            dims = [1] * (4 - len(blob.shape.dim)) + list(blob.shape.dim)
            proto.num, proto.channels, proto.height, proto.width = dims
            proto.data.extend(blob.data)
    out["v1"] = v1.SerializeToString()
    double = Net(caffe_pb2.NetParameter.FromString(net.param.SerializeToString()), phase=TEST,
                 dtype=torch.float64, device="cpu")
    out["double"] = double.to_proto().SerializeToString()
    bad = net.to_proto()
    blob_to_proto(net._layers[net.layer_index["ip"]].blobs[0], bad.layer[4].blobs[0])
    bad.layer[4].blobs[0].shape.dim[:] = [1000000, 1000000]
    out["huge_declared"] = bad.SerializeToString()
    path = os.path.join(work, "w.caffemodel.h5")
    net.save(path)
    with open(path, "rb") as f:
        out_h5 = {"current": f.read()}
    net.save(path, write_diff=True)
    with open(path, "rb") as f:
        out_h5["with_diff"] = f.read()

    def huge(f):
        f.create_group("data/ip").create_dataset("0", shape=(10 ** 6, 10 ** 6), dtype="f4",
                                                 chunks=(1, 1))
    out_h5["huge_declared"] = _h5(huge)
    return out, out_h5


def _states(work):
    out = {}
    for fmt, name in (("BINARYPROTO", "solverstate"), ("HDF5", "solverstate_h5")):
        solver = targets.fixture_solver(fmt)
        solver.iter = 2
        model, state = solver.snapshot()
        # learned_net as a bare name: the state is found beside its weights wherever it lies.
        if fmt == "HDF5":
            with h5py.File(state, "r+") as f:
                del f["learned_net"]
                f.create_dataset("learned_net", data=np.bytes_(os.path.basename(model)))
            with open(state, "rb") as f:
                data = f.read()
        else:
            from caffe.proto import caffe_pb2
            with open(state, "rb") as f:
                proto = caffe_pb2.SolverState.FromString(f.read())
            proto.learned_net = os.path.basename(model)
            data = proto.SerializeToString()
        out[name] = {"snapshot": data}
    return out


def _hdf5_data():
    rng = np.random.default_rng(4)
    out = {}

    def basic(f):
        f.create_dataset("data", data=rng.standard_normal((4, 1, 2, 3)).astype(np.float32))
        f.create_dataset("label", data=np.arange(4, dtype=np.float32))
    out["basic"] = _h5(basic)

    def ints(f):
        f.create_dataset("data", data=rng.integers(0, 9, (3, 5)).astype(np.int16))
        f.create_dataset("label", data=np.arange(3, dtype=np.uint8), chunks=(1,),
                         compression="gzip")
    out["ints_gzip"] = _h5(ints)

    def huge(f):
        f.create_dataset("data", shape=(10 ** 7, 10 ** 6), dtype="f8", chunks=(1, 1))
        f.create_dataset("label", shape=(10 ** 7,), dtype="f4", chunks=(1,))
    out["huge_declared"] = _h5(huge)
    return out


def main():
    import tempfile
    work = tempfile.mkdtemp(prefix="caffe-seeds-")
    targets.setup(work)
    import caffe
    caffe.set_random_seed(1701)     # the same seeds every time
    corpora = {name: {} for name in targets.TARGETS}
    for target in ("net_prototxt", "net_build"):
        for name, text in NETS.items():
            corpora[target][name] = text.encode()
        corpora[target]["binary"] = _net("conv_pool").SerializeToString()
    for name, text in SOLVERS.items():
        corpora["solver_prototxt"][name] = text.encode()
    corpora["caffemodel"], corpora["caffemodel_h5"] = _weights(work)
    corpora.update(_states(work))
    corpora["binaryproto"] = _blobprotos()
    datums = _datums()
    corpora["datum"] = datums
    images = _images()
    # image: the first byte picks the colour mode and sizes (see targets.image).
    corpora["image"] = {k: bytes([i]) + v for i, (k, v) in enumerate(images.items())}
    for backend in ("lmdb", "leveldb"):
        recs = [(f"{i:08d}_{k}".encode(), v) for i, (k, v) in enumerate(datums.items())
                if k not in ("huge_declared",)]
        same = [(f"{i:03d}".encode(), datums["raw"]) for i in range(3)]
        corpora[backend] = {"mixed": bytes([0]) + targets.join_records(recs),
                            "raw_batches": bytes([0b01000001]) + targets.join_records(same),
                            "encoded": bytes([0b10000010]) + targets.join_records(
                                [(b"a", datums["png"]), (b"b", datums["jpg"])]),
                            "odd_keys": bytes([0]) + targets.join_records(
                                [(b"\xff\x00", datums["raw"]), (b"x" * 255, datums["raw"]),
                                 (b"k", b"not a datum")])}
    corpora["hdf5_data"] = {k: bytes([i * 9]) + v for i, (k, v) in enumerate(_hdf5_data().items())}
    corpora["image_list"] = {"list": bytes([0]) + b"a.png 0\nb.jpg 1\nc.bmp 2\n",
                             "resize_shuffle": bytes([0b01100011]) + b"b.jpg 5\n\na.png -1\r\n",
                             "bad_label": bytes([0]) + b"a.png x\n"}
    window = (b"# 0\na.png\n3\n8\n10\n3\n1 0.9 0 0 5 5\n2 0.6 2 1 9 7\n0 0.1 1 1 6 7\n"
              b"# 1\nb.jpg\n1\n12\n9\n2\n1 1.0 0 0 8 11\n0 0.0 3 3 4 4\n")
    corpora["window_file"] = {"windows": bytes([0]) + window, "square_pad": bytes([3]) + window,
                              "cached_mirror": bytes([12]) + window}
    for name, seeds in corpora.items():
        folder = os.path.join(CORPUS, name)
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            if old.startswith("seed-"):
                os.remove(os.path.join(folder, old))
        for seed, data in seeds.items():
            with open(os.path.join(folder, f"seed-{seed}"), "wb") as f:
                f.write(data)
        print(f"{name:16s} {len(seeds)} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()
