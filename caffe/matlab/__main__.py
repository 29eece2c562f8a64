"""`python -m caffe.matlab build|path|octave|matlab`: build matcaffe's gateway, find it, run a host.

    python -m caffe.matlab build [--octave | --matlab MATLABROOT] [--out DIR]
    python -m caffe.matlab path [--out DIR]
    python -m caffe.matlab octave [ARGS...]     # octave with matcaffe on its path
    python -m caffe.matlab matlab [ARGS...]     # the same for MATLAB (`matlab` on PATH)

The launchers matter beyond convenience: Octave loads OpenMP when it starts, so the thread
settings torch needs (OMP_WAIT_POLICY=PASSIVE, see caffe/matlab/startup.py) must be in its
environment before it starts; the launchers set them (the ones the user did not set), and
put the matcaffe folder on OCTAVE_PATH / MATLABPATH.
"""
import argparse
import os
import shutil
import sys

from .. import threads
from .build import BuildError, build, built, default_folder


def host_environment(folder, environ=None, host="octave"):
    """The environment to start a host in: thread settings and matcaffe's folder on its path."""
    env = dict(os.environ if environ is None else environ)
    threads.for_children(env)
    env.update(threads.choose(env, threads.cpu_budget()))
    var = "OCTAVE_PATH" if host == "octave" else "MATLABPATH"
    env[var] = os.pathsep.join(p for p in (str(folder), env.get(var, "")) if p)
    return env


def _folder_or_exit(out):
    folder = built(out)
    if folder is None:
        where = out or default_folder()
        sys.exit(f"caffe.matlab: no gateway built in {where}: run "
                 f"`python -m caffe.matlab build` first")
    return folder


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("octave", "matlab"):
        host, rest = argv[0], argv[1:]
        folder = _folder_or_exit(os.environ.get("PYCAFFE_MATLAB_DIR"))
        program = shutil.which(host)
        if program is None:
            sys.exit(f"caffe.matlab: `{host}` is not on PATH")
        os.execve(program, [host, *rest], host_environment(folder, host=host))
    parser = argparse.ArgumentParser(prog="python -m caffe.matlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the caffe_ gateway and print its folder")
    which = b.add_mutually_exclusive_group()
    which.add_argument("--octave", action="store_true", help="for GNU Octave (the default)")
    which.add_argument("--matlab", metavar="MATLABROOT", help="for MATLAB, with MATLABROOT/bin/mex")
    b.add_argument("--out", help=f"output folder (default {default_folder()})")
    p = sub.add_parser("path", help="print the folder to addpath")
    p.add_argument("--out", help="the folder given to build --out")
    sub.add_parser("octave", help="start Octave with matcaffe (arguments go to octave)")
    sub.add_parser("matlab", help="start MATLAB with matcaffe (arguments go to matlab)")
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            folder = build(args.out, host="matlab" if args.matlab else "octave",
                           matlabroot=args.matlab)
        except BuildError as e:
            sys.exit(f"caffe.matlab: {e}")
        print(folder)
        print(f"In {'MATLAB' if args.matlab else 'Octave'}: addpath('{folder}')  "
              f"(start it with OMP_WAIT_POLICY=PASSIVE, or via python -m caffe.matlab "
              f"{'matlab' if args.matlab else 'octave'})", file=sys.stderr)
    else:
        print(_folder_or_exit(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
