"""The one place a device setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) becomes a torch device."""

from __future__ import annotations

import torch

from vreid.core.errors import ConfigError


def resolve_device(
    device: str | torch.device | None = "auto", *, setting: str = "device"
) -> torch.device:
    """``"auto"`` (or ``None``) → CUDA when available, else the CPU; anything else as
    ``torch.device``. A name torch does not know, or CUDA where there is none, is a
    :class:`~vreid.core.errors.ConfigError` naming ``setting`` (the option or config key it came from).
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(
            f"{setting}={device!r}: not a device; use auto, cpu, cuda or cuda:N"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{setting}={device}: CUDA is not available here; use cpu or auto")
    return dev
