"""The project's own error types: every reader of outside data raises one of these."""


class CaffeError(Exception):
    """Base class of every error pycaffe raises on bad input."""


class ProtoError(CaffeError):
    """A prototxt or binary protobuf file that cannot be parsed."""


class UpgradeError(CaffeError):
    """An old-format (V0/V1) definition that cannot be upgraded."""


class LayerSetupError(CaffeError):
    """A layer whose parameters or inputs are inconsistent."""


class NetError(CaffeError):
    """A net whose structure is wrong (dangling bottoms, bad sharing, ...)."""


class WeightsError(CaffeError):
    """Learned weights that do not fit the net they are copied into."""


class SolverError(CaffeError):
    """A solver definition that cannot be trained, or training that cannot go on."""


class DataError(CaffeError):
    """A database, record, image or list file that cannot be read as Caffe data."""


class OutOfMemoryError(CaffeError, MemoryError):
    """A blob or array larger than the memory the machine can still give (a MemoryError too)."""


class WriteError(CaffeError, OSError):
    """A file that cannot be written (disk full, no permission); an OSError too, errno kept."""
