"""caffe export: write a trained net as ONNX and/or as a PyTorch program.

    caffe export -model deploy.prototxt -weights w.caffemodel --onnx model.onnx
                 [--torch model.pt2 [--torch_format export|state_dict]]
                 [--opset 17] [--outputs prob,fc7] [--batch_size 1]
                 [--input_shape data=1,3,227,227[;label=1]] [--phase TEST] [--level 0]
                 [--stage a,b]

The net is built in the TEST phase by default (deploy semantics: Dropout passes values
through, BatchNorm uses its stored statistics). ONNX graphs have static shapes: the inputs'
shapes from the prototxt, or as --batch_size / --input_shape set them.
--torch_format export (default) saves a torch.export program that torch.export.load reads
without caffe; state_dict saves the parameters of caffe.export.to_torch's module.
Flags are gflags-style: -flag value, --flag value, -flag=value and --flag=value all work.
"""
import logging
import sys

from .gflags import Parser, run, setup_logging

log = logging.getLogger("caffe")


def parser():
    p = Parser(prog="caffe export", description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--model", required=True, help="the net definition (.prototxt)")
    p.add_argument("--weights", default="", help="trained weights (.caffemodel or .h5)")
    p.add_argument("--onnx", default="", help="write the ONNX model here")
    p.add_argument("--torch", default="", help="write the PyTorch program here")
    p.add_argument("--torch_format", default="export", choices=("export", "state_dict"),
                   help="torch.export program (default) or the module's state_dict")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17)")
    p.add_argument("--outputs", default="", help="blobs to export, separated by ',' "
                   "(default: the net's outputs)")
    p.add_argument("--batch_size", type=int, default=0, help="reshape every input to this "
                   "batch size first")
    p.add_argument("--input_shape", default="", help="name=d0,d1,... per input, separated "
                   "by ';'")
    p.add_argument("--phase", default="TEST", choices=("TRAIN", "TEST"))
    p.add_argument("--level", type=int, default=0, help="net state level")
    p.add_argument("--stage", default="", help="net state stages, separated by ','")
    return p


def _input_shapes(net, args):
    from ..errors import CaffeError
    shapes = {}
    for name in net.inputs:
        if args.batch_size > 0:
            shapes[name] = (args.batch_size,) + tuple(net.blobs[name].shape[1:])
    for item in filter(None, (s.strip() for s in args.input_shape.split(";"))):
        name, _, dims = item.partition("=")
        if name not in net.inputs:
            raise CaffeError(f"--input_shape: '{name}' is not an input of the net (inputs: "
                             f"{', '.join(net.inputs)})")
        try:
            shapes[name] = tuple(int(d) for d in dims.split(","))
        except ValueError:
            raise CaffeError(f"--input_shape: bad dims '{dims}' for '{name}'") from None
    return shapes


def _refuse_python_layers(model, phase, level, stages):
    """Refuse a net with Python layers before building it: building would import and run
    the modules they name, and neither ONNX nor torch.export can hold them anyway."""
    from .. import formats
    from ..export.graph import layer_error
    from ..net_param import filter_net
    param = formats.read_net_param(model)
    param.state.phase, param.state.level = phase, level
    param.state.stage.extend(stages)
    for layer in filter_net(param).layer:
        if layer.type == "Python":
            raise layer_error(layer, f"a Python layer runs arbitrary code (module "
                                     f"'{layer.python_param.module}', not imported); export a "
                                     f"deploy net whose inputs are Input layers")


def export(args):
    import caffe
    from ..errors import CaffeError
    if not args.onnx and not args.torch:
        raise CaffeError("nothing to do: give --onnx FILE and/or --torch FILE")
    phase = caffe.TRAIN if args.phase == "TRAIN" else caffe.TEST
    stages = [s for s in args.stage.split(",") if s]
    _refuse_python_layers(args.model, phase, args.level, stages)
    net = caffe.Net(args.model, phase=phase, level=args.level, stages=stages,
                    weights=args.weights or None)
    if not args.weights:
        log.warning("No --weights given: exporting the weights the fillers drew")
    shapes = _input_shapes(net, args)
    for name, shape in shapes.items():
        net.blobs[name].reshape(*shape)
    outputs = [s for s in args.outputs.split(",") if s] or None
    from .. import export as exporter
    if args.onnx:
        exporter.to_onnx(net, args.onnx, opset=args.opset, outputs=outputs)
        log.info("Wrote ONNX model %s (inputs %s)", args.onnx,
                 ", ".join(f"{n} {net.blobs[n].shape}" for n in net.inputs))
    if args.torch:
        save_torch(exporter.to_torch(net, outputs), net, args.torch, args.torch_format)
        log.info("Wrote PyTorch %s %s", "program" if args.torch_format == "export"
                 else "state_dict", args.torch)
    return 0


def save_torch(module, net, path, fmt="export"):
    """Save a to_torch module: a torch.export program traced at the net's input shapes, or
    its state_dict."""
    import torch
    if fmt == "state_dict":
        torch.save(module.state_dict(), path)
        return
    examples = tuple(torch.zeros(net.blobs[n].shape, dtype=net.dtype) for n in
                     module.input_names)
    torch.export.save(torch.export.export(module.eval(), examples), path)


def main(argv=None):
    """`caffe export ...`; argv may start with the word 'export'. Returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["export"]:
        argv = argv[1:]
    args = parser().parse(argv)
    setup_logging()
    try:
        return run(export, args)
    except OSError as e:
        log.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
