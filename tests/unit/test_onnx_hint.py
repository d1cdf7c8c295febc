"""A failed ONNX export is one line that says what to do: for transformers' mask code (aten::diff), pass a mask."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from nasprune_cli.checkpoint import write_deployable
from nasprune_cli.errors import CheckpointError

pytest.importorskip("onnxruntime")


class Diff(nn.Module):
    """Uses torch.diff, as transformers' causal-mask code does when no attention_mask is given."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.diff(x, dim=-1, prepend=x[..., :1])


def test_an_onnx_export_on_aten_diff_names_the_attention_mask(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        write_deployable(Diff(), tmp_path / "m.onnx", "onnx", torch.randn(2, 5))
    message = str(err.value)
    assert "aten::diff" in message and "input.keywords={attention_mask: ones}" in message
    assert "\n" not in message and not (tmp_path / "m.onnx").exists()
