"""`caffe view`: a net's graph in the browser, with its parameters and blob shapes.

    caffe view model.prototxt [-weights w.caffemodel] [-phase TRAIN|TEST] [-port 8000]
               [-rankdir TB|LR] [-no_browser] [-o page.html] [-netron]
               [-allow_python_layers]

Serves one page on 127.0.0.1 (caffe.view) until Ctrl-C; -o writes the page to a file
instead. -netron opens the files in Netron (pip install netron) rather than our page.
A net with Python layers is drawn from its definition, without shapes: computing them would
import and run the modules its Python layers name; -allow_python_layers runs them.
"""
import argparse
import sys
import threading
import webbrowser

from .. import view
from ..errors import CaffeError
from ..formats import atomic_write
from ..proto import caffe_pb2
from .gflags import bool_arg, gflags_argv

BOOL_FLAGS = ("allow_python_layers",)


def _parser():
    p = argparse.ArgumentParser(prog="caffe view", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the net definition (prototxt)")
    p.add_argument("-weights", "--weights", default="", help="weights whose statistics to show")
    p.add_argument("-phase", "--phase", default="TEST", choices=("TRAIN", "TEST"))
    p.add_argument("-rankdir", "--rankdir", default="TB", choices=("TB", "LR", "BT", "RL"))
    p.add_argument("-host", "--host", default="127.0.0.1")
    p.add_argument("-port", "--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("-no_browser", "--no_browser", action="store_true",
                   help="print the address without opening a browser")
    p.add_argument("-o", "--output", default="", help="write the page to this file and exit")
    p.add_argument("-netron", "--netron", action="store_true", help="open in Netron instead")
    p.add_argument("-allow_python_layers", "--allow_python_layers", type=bool_arg,
                   default=False, metavar="true|false",
                   help="build a net with Python layers (runs the code they name) to show its "
                   "shapes (default false)")
    return p


def _netron(args):
    try:
        import netron
    except ImportError:
        raise CaffeError("-netron needs the netron package (pip install netron, or "
                         "pip install 'pycaffe[view]')") from None
    netron.start(args.weights or args.model, (args.host, args.port),
                 browse=not args.no_browser)
    netron.wait()
    return 0


def main(argv=None):
    # gflags' bool spellings (-flag, -noflag, -flag=false); `-allow_python_layers false`
    # leaves 'false' over, which the parser refuses.
    args = _parser().parse_args(gflags_argv(sys.argv[1:] if argv is None else argv,
                                            BOOL_FLAGS))
    try:
        if args.netron:
            return _netron(args)
        phase = caffe_pb2.TRAIN if args.phase == "TRAIN" else caffe_pb2.TEST
        page = view.build_page(args.model, args.weights or None, phase, args.rankdir,
                               allow_python_layers=args.allow_python_layers)
        if args.output:
            atomic_write(args.output, page.encode("utf-8"))
            print(f"Wrote {args.output}")
            return 0
        server = view.serve(page, args.host, args.port, background=True)
        print(f"Serving {args.model} at {server.url} (Ctrl-C to stop)", flush=True)
        if not args.no_browser:
            webbrowser.open(server.url)
        try:
            threading.Event().wait()        # the server runs in its own thread
        except KeyboardInterrupt:
            pass
        server.shutdown()
        return 0
    except (CaffeError, OSError) as e:
        print(f"caffe view: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
