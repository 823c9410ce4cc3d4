"""Where a trial computes: CPU or the GPU Ray allotted it, and mixed precision there."""
from __future__ import annotations

import contextlib
import warnings

import torch


def _gpu_allotted() -> bool | None:
    """True if Ray allotted this process a GPU, False if not, ``None`` outside Ray (Ray not
    started in this process). Never starts Ray: ``ray.get_gpu_ids()`` would start a local Ray
    (seconds) when called outside a trial."""
    try:
        import ray

        if not ray.is_initialized():
            return None
        return bool(ray.get_gpu_ids())
    except Exception:  # noqa: BLE001 - Ray unusable here: treat as outside Ray
        return None


def trial_device() -> torch.device:
    """The device of a trial: CUDA when Ray allotted it a GPU (whole or a fraction, e.g.
    ``resources.gpu: 0.25``) and CUDA works, else the CPU (CPU-only trials on GPU nodes stay on
    the CPU). Outside Ray: CUDA if available, else the CPU."""
    allotted = _gpu_allotted()
    if allotted is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not allotted:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    warnings.warn("this trial was allotted a GPU but torch cannot use CUDA here; training on the CPU",
                  RuntimeWarning, stacklevel=2)
    return torch.device("cpu")


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on a CUDA device when ``enabled`` (a family's ``amp``); a no-op on the
    CPU, where bfloat16 matmuls are slower than float32 on most processors."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=bool(enabled and device.type == "cuda"))


def node_id() -> str:
    """The Ray node id of this process ("" outside Ray): tells nodes apart when they share a hostname."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001
        return ""
