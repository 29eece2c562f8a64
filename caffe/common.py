"""Process-wide settings, as Caffe's `Caffe` singleton: mode, device and random seed."""
import logging
import random

import numpy as np
import torch

from .errors import CaffeError

CPU, GPU = 0, 1
_state = {"mode": CPU, "device_id": 0}


def set_mode_cpu() -> None:
    _state["mode"] = CPU


def set_mode_gpu() -> None:
    """Run new nets and solvers on the GPU (set_device picks which). Without a CUDA device
    caffe stays on the CPU, saying so once: pycaffe scripts written for GPUs (BVLC's
    python/train.py) then run on CPU workers instead of stopping."""
    if not torch.cuda.is_available():
        if not _state.get("warned_no_gpu"):
            logging.getLogger("caffe").warning(
                "set_mode_gpu: no CUDA device is available to PyTorch on this machine; "
                "running on the CPU")
            _state["warned_no_gpu"] = True
        _state["mode"] = CPU
        return
    _state["mode"] = GPU


def set_device(device_id: int) -> None:
    if torch.cuda.is_available() and not 0 <= device_id < torch.cuda.device_count():
        raise CaffeError(f"set_device: no GPU {device_id}; this machine has "
                         f"{torch.cuda.device_count()}")
    _state["device_id"] = int(device_id)


def mode() -> int:
    return _state["mode"]


def device() -> torch.device:
    """The torch device new nets and solvers are built on."""
    if _state["mode"] == GPU:
        return torch.device("cuda", _state["device_id"])
    return torch.device("cpu")


def set_random_seed(seed: int) -> None:
    """Seed every generator a layer, filler or data layer may draw from."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
