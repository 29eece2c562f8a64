"""`python -m caffe ARGS` is the `caffe` command."""
import sys

from caffe.tools.caffe import program

if __name__ == "__main__":
    sys.exit(program())
