"""Regenerate caffe_pb2.py from caffe.proto.

    python -m caffe.proto.generate

Needs grpcio-tools (a development dependency only): the generated module is
committed so that users of pycaffe need the protobuf runtime and nothing else.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def generate(out_dir=HERE):
    """Compile caffe.proto into ``out_dir``/caffe_pb2.py and return its path."""
    from grpc_tools import protoc

    # Compiling from inside this folder registers the file as "caffe.proto",
    # the same name BVLC's own caffe_pb2 uses.
    status = protoc.main([
        "protoc",
        f"--proto_path={HERE}",
        f"--python_out={out_dir}",
        str(HERE / "caffe.proto"),
    ])
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status}")
    return Path(out_dir) / "caffe_pb2.py"


def main():
    try:
        print(f"wrote {generate()}")
    except RuntimeError as error:
        sys.exit(str(error))


if __name__ == "__main__":
    main()
