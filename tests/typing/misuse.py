"""Wrong calls mypy must reject (tests/test_typing.py checks each is reported)."""
import caffe
from caffe.proto import caffe_pb2

caffe.set_random_seed("seed")                       # E: str for int
caffe_pb2.NetParameter(nmae="n")                    # E: no such field
caffe.io.load_image(3)                              # E: int for str
caffe.io.array_to_datum(caffe.io.load_image("a"), label="cat")  # E: str for int
