"""`python -m caffe ARGS` is the `caffe` command."""
import sys

from caffe.tools.caffe import main

if __name__ == "__main__":
    sys.exit(main())
