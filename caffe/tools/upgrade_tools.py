"""BVLC's upgrade tools: rewrite old-format nets and solvers in the current format.

    upgrade_net_proto_text    IN.prototxt   OUT.prototxt
    upgrade_net_proto_binary  IN.caffemodel OUT.caffemodel
    upgrade_solver_proto_text IN.prototxt   OUT.prototxt

Each reads the file as it is (no automatic upgrade on load), upgrades it with caffe.upgrade if it
needs it (else says it is already current and copies it) and writes the result. Exit status: 0 when
the upgrade was complete, 1 when some setting could not be carried over (see the log), 2 when the
input cannot be read.
"""
import logging

from .. import formats, upgrade
from .gflags import Parser, setup_logging
from ..errors import CaffeError
from ..proto import caffe_pb2

log = logging.getLogger("caffe")


def _parser(prog, what, suffix):
    p = Parser(prog=prog, description=f"Upgrade a {what} to the current format.")
    p.add_argument("input", metavar=f"{what.split()[0]}_in{suffix}")
    p.add_argument("output", metavar=f"{what.split()[0]}_out{suffix}")
    return p


def _upgrade(argv, prog, what, suffix, message, read, needs, upgrade_fn, write):
    setup_logging()
    args = _parser(prog, what, suffix).parse(argv)
    try:
        param = read(args.input, message)
    except CaffeError as e:
        log.error("Failed to parse input %s as %s: %s", args.input, message.DESCRIPTOR.name, e)
        return 2
    success = True
    try:
        if needs(param):
            success = upgrade_fn(param, args.input)
            if not success:
                log.error("Encountered error(s) while upgrading %s; see details above.", what)
        else:
            log.error("File already in latest proto format: %s", args.input)
        write(args.output, param)
    except CaffeError as e:
        log.error("%s", e)
        return 1
    log.info("Wrote upgraded %s to %s", message.DESCRIPTOR.name, args.output)
    return 0 if success else 1


def upgrade_net_proto_text(argv=None):
    return _upgrade(argv, "upgrade_net_proto_text", "net prototxt", ".prototxt",
                    caffe_pb2.NetParameter(), formats.read_text_proto, upgrade.net_needs_upgrade,
                    upgrade.upgrade_net_as_needed, formats.write_text_proto)


def upgrade_net_proto_binary(argv=None):
    return _upgrade(argv, "upgrade_net_proto_binary", "net binary proto", ".caffemodel",
                    caffe_pb2.NetParameter(), formats.read_binary_proto,
                    upgrade.net_needs_upgrade, upgrade.upgrade_net_as_needed,
                    formats.write_binary_proto)


def upgrade_solver_proto_text(argv=None):
    return _upgrade(argv, "upgrade_solver_proto_text", "solver prototxt", ".prototxt",
                    caffe_pb2.SolverParameter(), formats.read_text_proto,
                    upgrade.solver_needs_upgrade, upgrade.upgrade_solver_as_needed,
                    formats.write_text_proto)


main = upgrade_net_proto_text
