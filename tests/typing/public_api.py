"""Typical pycaffe user code; tests/test_typing.py runs mypy on it (it is not run itself)."""
import numpy as np

import caffe
from caffe.proto import caffe_pb2

caffe.set_mode_cpu()
caffe.set_random_seed(1701)
net_param: caffe_pb2.NetParameter = caffe_pb2.NetParameter(name="n")
layer = net_param.layer.add()
layer.name, layer.type = "ip", "InnerProduct"
layer.inner_product_param.num_output = 10
phase: int = caffe.TRAIN
image: np.ndarray = caffe.io.load_image("cat.jpg")
datum: caffe_pb2.Datum = caffe.io.array_to_datum(np.zeros((3, 2, 2), np.uint8), label=1)
array: np.ndarray = caffe.io.datum_to_array(datum)
transformer = caffe.io.Transformer({"data": (1, 3, 227, 227)})
transformer.set_transpose("data", (2, 0, 1))
net = caffe.Net("deploy.prototxt", caffe.TEST)
outputs: dict = net.forward()
spec = caffe.NetSpec()
