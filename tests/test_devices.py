"""Device settings: auto picks what is there; a bad name or missing CUDA names the setting."""

from __future__ import annotations

import pytest
import torch

from vreid.core.devices import resolve_device
from vreid.core.errors import ConfigError


def test_auto_and_explicit_devices():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_bad_devices_name_the_setting():
    with pytest.raises(ConfigError, match=r"runtime.device='gpu0': not a device"):
        resolve_device("gpu0", setting="runtime.device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"runtime.device=cuda:1: CUDA is not available"):
            resolve_device("cuda:1", setting="runtime.device")
