"""Optional dependencies: imported at the point of use, with a one-line message naming the extra.

    plyvel = require("plyvel", extra="leveldb", feature="LevelDB databases")

raises, when plyvel is absent::

    MissingDependency: LevelDB databases need the 'plyvel' package: pip install 'pycaffe[leveldb]'
"""
import importlib

from .errors import CaffeError

# import name -> the distribution pip installs it from (where they differ)
DISTRIBUTIONS = {"skimage": "scikit-image", "sklearn": "scikit-learn", "PIL": "Pillow", "yaml": "PyYAML"}


class MissingDependency(CaffeError, ImportError):
    """A feature's optional package is not installed (the message names the extra)."""


def message(module, extra, feature=None):
    """The one-line explanation :func:`require` raises."""
    package = DISTRIBUTIONS.get(module.split(".")[0], module.split(".")[0])
    need = f"{feature} need" if feature else "this needs"
    return f"{need} the '{package}' package: pip install 'pycaffe[{extra}]'"


def require(module, extra, feature=None):
    """Import and return ``module``, or raise :class:`MissingDependency` naming ``extra``."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = getattr(error, "name", None) or module
        if missing.split(".")[0] != module.split(".")[0]:
            raise   # the package is there but one of its own imports failed: show that
        raise MissingDependency(message(module, extra, feature)) from None


class LazyModule:
    """A module imported on first attribute access: ``h5py = LazyModule("h5py")``.

    For core dependencies that only some features use (h5py, Pillow): ``import caffe`` and
    nets that never touch HDF5 or images do not pay for importing them.
    """

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self):
        return f"<lazily imported module '{self._name}'>"
