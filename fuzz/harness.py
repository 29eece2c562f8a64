"""The atheris (libFuzzer) harness for one target:

    python -m fuzz.harness TARGET [libFuzzer flags] [CORPUS_DIR ...]

FUZZ_ADDRESS_SPACE_MB=<n> caps the process's address space (the runner's default: 4096).
With FUZZ_COLLECT=<folder> in the environment it does not stop at a failure: it keeps one input
per distinct failure (exception type and innermost caffe/ line) in that folder, with an
index.txt, and fuzzes on (triage of many bugs at once).

fuzz/__main__.py runs it for every target; run it by hand to fuzz one reader or to replay a
crash file (python -m fuzz.harness datum crash-1234). An exception other than CaffeError, a
timeout (-timeout) or memory past -rss_limit_mb stops the run and leaves the input in a file.
"""
import os
import shutil
import sys
import traceback


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    name, argv = sys.argv[1], [sys.argv[0]] + sys.argv[2:]
    cap_mb = int(os.environ.get("FUZZ_ADDRESS_SPACE_MB", "0"))
    if cap_mb:
        # libhdf5 sizes some allocations from a file's metadata (fuzzing found 10 KB files that
        # make it take all memory): under an address-space cap those fail cleanly, as a
        # CaffeError, while our own code running out still shows as a MemoryError.
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (cap_mb << 20, cap_mb << 20))
    import atheris
    # The heavy dependencies are imported first, uninstrumented: coverage is collected in the
    # readers (caffe), Pillow's Python plugins and protobuf's text parser.
    import h5py  # noqa: F401
    import lmdb  # noqa: F401
    import numpy  # noqa: F401
    import plyvel  # noqa: F401
    import torch  # noqa: F401
    with atheris.instrument_imports(include=["caffe", "fuzz.targets", "PIL",
                                             "google.protobuf.text_format"]):
        import google.protobuf.text_format  # noqa: F401
        from PIL import Image
        Image.init()
        import caffe  # noqa: F401
        import caffe.data.transformer  # noqa: F401
        import caffe.io  # noqa: F401
        from fuzz import targets
    if name not in targets.TARGETS:
        sys.exit(f"unknown target '{name}' (targets: {', '.join(targets.TARGETS)})")
    # One scratch folder per target, reused: libFuzzer's exit skips atexit clean-up.
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else os.getcwd()
    work = os.path.join(base, f"caffe-fuzz-{name}")
    shutil.rmtree(work, ignore_errors=True)
    targets.setup(work)
    # Fixtures are built before fuzzing starts, so their cost is not charged to an input.
    if name.startswith("caffemodel"):
        targets.fixture_net()
    elif name == "solverstate":
        targets.fixture_solver("BINARYPROTO")
    elif name == "solverstate_h5":
        targets.fixture_solver("HDF5")

    collect = os.environ.get("FUZZ_COLLECT")
    seen = set()

    def one_input(data):
        if not collect:
            targets.run(name, data)
            return
        # Triage mode: record one input per distinct failure (exception type and the
        # innermost project frame) in $FUZZ_COLLECT and keep fuzzing.
        try:
            targets.run(name, data)
        except Exception as e:
            frames = [f for f in traceback.extract_tb(e.__traceback__)
                      if "/caffe/" in f.filename]
            where = f"{frames[-1].filename.rsplit('/caffe/', 1)[1]}:{frames[-1].lineno}" \
                if frames else "?"
            key = f"{type(e).__name__}@{where}"
            if key not in seen:
                seen.add(key)
                os.makedirs(collect, exist_ok=True)
                with open(os.path.join(collect, key.replace("/", "_")), "wb") as f:
                    f.write(data)
                with open(os.path.join(collect, "index.txt"), "a") as f:
                    f.write(f"{key}  {type(e).__name__}: {str(e)[:200]}\n")

    mutator = None
    if name in ("net_prototxt", "net_build", "solver_prototxt"):
        from caffe.proto import caffe_pb2
        from fuzz.mutators import prototxt_mutator
        mutator = prototxt_mutator(caffe_pb2.NetParameter if name.startswith("net")
                                   else caffe_pb2.SolverParameter)
    atheris.Setup(argv, one_input, custom_mutator=mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
