"""Our caffe_pb2 beside another module generated from a file named caffe.proto (BVLC's)."""
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest

from tests.conftest import shared_path

ROOT = Path(__file__).resolve().parents[2]
BVLC_TARBALL = ("reference", "bvlc-caffe-9b89154.tar.gz")
BVLC_BUILT = Path("/opt/bvlc/src/python/caffe/proto/caffe_pb2.py")

# Loads a caffe_pb2 generated from BVLC's caffe.proto (default pool) and ours (private pool),
# in the order given, and uses both: each parses its own schema's fields.
SCRIPT = textwrap.dedent("""
    import importlib.util, sys
    from google.protobuf import descriptor_pool, text_format

    def load_bvlc():
        spec = importlib.util.spec_from_file_location("caffe_pb2", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        sys.modules["caffe_pb2"] = module
        spec.loader.exec_module(module)
        return module

    def load_ours():
        from caffe.proto import caffe_pb2
        return caffe_pb2

    first, second = (load_bvlc, load_ours) if sys.argv[2] == "bvlc-first" else (load_ours, load_bvlc)
    a = first(); b = second()
    bvlc, ours = (a, b) if first is load_bvlc else (b, a)
    # BVLC names its file caffe.proto or, built from its tree, caffe/proto/caffe.proto: either
    # way its "caffe.*" messages would clash with ours in one pool.
    assert ours.DESCRIPTOR.name == "caffe.proto"
    assert bvlc.DESCRIPTOR.name.endswith("caffe.proto")
    assert bvlc.DESCRIPTOR.pool is not ours.DESCRIPTOR.pool
    # The default pool holds BVLC's schema, untouched by ours.
    default = descriptor_pool.Default().FindMessageTypeByName("caffe.NetParameter")
    assert default is bvlc.NetParameter.DESCRIPTOR, "default pool holds our schema"
    text = 'name: "n" layer { name: "c" type: "Convolution" convolution_param { num_output: 2 } }'
    for module in (bvlc, ours):
        net = text_format.Parse(text, module.NetParameter())
        again = module.NetParameter.FromString(net.SerializeToString())
        assert again.layer[0].convolution_param.num_output == 2
    # Wire compatible both ways.
    assert ours.NetParameter.FromString(bvlc.NetParameter(name="x").SerializeToString()).name == "x"
    # Each module keeps its own classes and schema objects.
    assert ours.NetParameter is not bvlc.NetParameter
    assert ours.LayerParameter.DESCRIPTOR.file is ours.DESCRIPTOR
    assert bvlc.LayerParameter.DESCRIPTOR.file is bvlc.DESCRIPTOR
    import caffe
    net = caffe.Net  # the package imports beside BVLC's module too
    print("ok", sys.argv[2])
""")


def _bvlc_pb2(tmp_path):
    """caffe_pb2.py compiled from BVLC's caffe.proto (reference tarball) with grpc_tools' protoc."""
    grpc_tools = pytest.importorskip("grpc_tools", reason="grpcio-tools (the [test] extra) "
                                     "compiles BVLC's caffe.proto")
    del grpc_tools
    with tarfile.open(shared_path(*BVLC_TARBALL)) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("src/caffe/proto/caffe.proto"))
        (tmp_path / "caffe.proto").write_bytes(tar.extractfile(member).read())
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={tmp_path}",
                    f"--python_out={tmp_path}", str(tmp_path / "caffe.proto")], check=True)
    return tmp_path / "caffe_pb2.py"


def _run(pb2, order, implementation=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if implementation:
        env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = implementation
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(pb2), order], env=env,
                            capture_output=True, text=True, cwd=pb2.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(order)


@pytest.mark.parametrize("order", ["bvlc-first", "ours-first"])
@pytest.mark.parametrize("implementation", [None, "python"])
def test_beside_bvlc_generated_module(tmp_path, order, implementation):
    _run(_bvlc_pb2(tmp_path), order, implementation)


@pytest.mark.skipif(not BVLC_BUILT.exists(), reason="BVLC's own build (/opt/bvlc) is absent")
@pytest.mark.parametrize("order", ["bvlc-first", "ours-first"])
def test_beside_bvlc_built_module(order):
    _run(BVLC_BUILT, order)


def test_messages_pickle():
    # The generated classes are named after the module they live in, so pickle finds them.
    import pickle

    from caffe.proto import caffe_pb2
    datum = caffe_pb2.Datum(channels=1, label=3, data=b"\x01")
    assert pickle.loads(pickle.dumps(datum)) == datum
    assert caffe_pb2.Datum.__module__ == "caffe.proto.caffe_pb2"
