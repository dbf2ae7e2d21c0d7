"""Choosing the torch device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
from __future__ import annotations

import torch

from avtag import AvtagError


class DeviceError(AvtagError):
    """A device that does not exist on this machine."""


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when one is usable, else the CPU; ``cpu``, ``cuda``, ``cuda:N`` as given.

    Raises:
        DeviceError: an unknown name, or a CUDA device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").strip().lower()
    device = str(device)[:40]  # as shown in an error line
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is available on this machine (use cpu or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    return dev
