"""Smoke test for one installed environment (run by .ci/compat.py from outside the checkout).

Exercises each core dependency through pycaffe's public API: protobuf (prototxt, binary),
numpy and torch (a net's forward/backward, a solver step), h5py (HDF5 weights), lmdb (a Datum
database), Pillow (caffe.io.load_image). Without torch (a Python no torch wheel exists for
here) only the protobuf part runs. Prints one line: "ok <what ran>".
"""
import importlib.util
import os
import sys
import tempfile

from google.protobuf import text_format

import caffe.proto.caffe_pb2 as pb

NET = """
name: "smoke"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def proto_part():
    net = text_format.Parse(NET, pb.NetParameter())
    again = pb.NetParameter.FromString(net.SerializeToString())
    assert again == net and again.layer[1].convolution_param.num_output == 2
    from caffe.proto.compat import is_repeated
    assert is_repeated(pb.NetParameter.DESCRIPTOR.fields_by_name["layer"])
    return "protobuf"


def torch_part(tmp):
    import numpy as np
    import caffe
    path = os.path.join(tmp, "net.prototxt")
    with open(path, "w") as f:
        f.write(NET)
    net = caffe.Net(path, caffe.TRAIN)
    net.blobs["data"].data[...] = np.random.RandomState(0).rand(4, 3, 8, 8)
    net.blobs["label"].data[...] = [0, 1, 2, 1]
    loss = float(net.forward()["loss"])
    net.backward()
    assert np.isfinite(loss) and np.abs(net.params["conv"][0].diff).sum() > 0
    for name in ("w.caffemodel", "w.caffemodel.h5"):
        net.save(os.path.join(tmp, name))
        other = caffe.Net(path, caffe.TEST, weights=os.path.join(tmp, name))
        assert np.array_equal(other.params["ip"][0].data, net.params["ip"][0].data)
    # lmdb: a Datum database written and read back
    import lmdb
    env = lmdb.open(os.path.join(tmp, "db"), map_size=1 << 20)
    datum = caffe.io.array_to_datum(np.arange(12, dtype=np.uint8).reshape(3, 2, 2), label=5)
    with env.begin(write=True) as txn:
        txn.put(b"0", datum.SerializeToString())
    with env.begin() as txn:
        back = pb.Datum.FromString(txn.get(b"0"))
    assert back.label == 5 and caffe.io.datum_to_array(back).shape == (3, 2, 2)
    # Pillow: caffe.io.load_image
    from PIL import Image
    Image.fromarray(np.full((5, 7, 3), 200, np.uint8)).save(os.path.join(tmp, "a.png"))
    image = caffe.io.load_image(os.path.join(tmp, "a.png"))
    assert image.shape == (5, 7, 3) and abs(image.max() - 200 / 255) < 1e-6
    return "net+solverless backward+caffemodel+hdf5+lmdb+pillow"


def main():
    ran = [proto_part()]
    if importlib.util.find_spec("torch") is not None:
        with tempfile.TemporaryDirectory() as tmp:
            ran.append(torch_part(tmp))
    print("ok", " ".join(ran))


if __name__ == "__main__":
    sys.exit(main())
