"""matcaffe: Caffe's MATLAB interface (`caffe.Net`, `caffe.Solver`, ... in MATLAB and GNU Octave)
served by pycaffe.

The +caffe folder here holds matcaffe's .m files; caffe_.c is the MEX gateway that runs
pycaffe inside the host, speaking BVLC's `caffe_` command protocol (bridge.py is its Python
half). `python -m caffe.matlab build` compiles the gateway and prints the folder to addpath;
`python -m caffe.matlab octave` starts Octave with it on the path and the thread settings
that keep torch fast there (see docs/matlab.md).

Nothing here is imported by `import caffe`.
"""
from .build import BuildError, build, built, default_folder

__all__ = ["BuildError", "build", "built", "default_folder"]
