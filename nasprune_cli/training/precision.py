"""Mixed precision on CUDA: forwards under torch.autocast (float16) and a GradScaler around backward and the optimizer
step. Elsewhere (the CPU, MPS) every method is the plain full-precision operation."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from nasprune_cli.errors import TrainingError


class Precision:
    """How a training step runs its forwards, backward and optimizer step: full precision, or autocast + GradScaler."""

    def __init__(self, device: torch.device, amp: bool | None = None) -> None:
        if amp and device.type != "cuda":
            raise TrainingError(
                f"--amp: mixed precision needs a CUDA device (the run is on {device}); drop --amp or pass --device cuda"
            )
        self.device = device
        self.enabled = device.type == "cuda" if amp is None else bool(amp)
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled else None

    def autocast(self) -> AbstractContextManager[Any]:
        """The context of a forward pass: autocast to float16 with mixed precision, else nothing."""
        if not self.enabled:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=torch.float16)

    def backward(self, loss: torch.Tensor) -> None:
        """Accumulate the gradients of `loss` (scaled with mixed precision, so float16 gradients do not underflow)."""
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """The optimizer step (with mixed precision: unscaled, skipped on inf / NaN gradients, the scale updated)."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state for a checkpoint ({} without mixed precision)."""
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the scaler's state from a checkpoint (nothing to do without mixed precision)."""
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)


FULL = Precision(torch.device("cpu"), False)  # the default of the step functions: full precision
