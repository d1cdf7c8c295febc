"""--device and --amp of training: full precision on the CPU (mixed precision is a no-op there and refused when asked
for), a missing GPU is one DeviceError, and on a CUDA machine the model trains on the GPU with autocast + GradScaler."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from nasprune_cli.errors import DeviceError, TrainingError
from nasprune_cli.training import TrainSettings, finetune
from nasprune_cli.training.precision import Precision
from tests.unit.test_training_resume import data, same_weights, small_model

pytestmark = pytest.mark.usefixtures("one_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_precision_on_the_cpu_is_plain_full_precision() -> None:
    precision = Precision(torch.device("cpu"))
    assert not precision.enabled and precision.scaler is None and precision.state_dict() == {}
    assert isinstance(precision.autocast(), nullcontext)
    weight = torch.nn.Parameter(torch.tensor([2.0]))
    optimizer = torch.optim.SGD([weight], lr=0.5)
    with precision.autocast():
        loss = (weight * 3.0).sum()
    assert loss.dtype == torch.float32
    precision.backward(loss)
    assert weight.grad.tolist() == [3.0]  # not scaled
    precision.step(optimizer)
    assert weight.tolist() == [0.5]


def test_amp_is_refused_off_cuda() -> None:
    with pytest.raises(TrainingError, match=r"--amp: mixed precision needs a CUDA device \(the run is on cpu\)"):
        Precision(torch.device("cpu"), True)
    with pytest.raises(TrainingError, match="--amp"):
        finetune(small_model(), None, data(), TrainSettings(steps=1, loss="ce", device="cpu", amp=True))


def test_no_amp_on_the_cpu_trains_as_before() -> None:
    plain = finetune(small_model(), None, data(), TrainSettings(steps=3, loss="ce", device="cpu")).model
    off = finetune(small_model(), None, data(), TrainSettings(steps=3, loss="ce", device="cpu", amp=False)).model
    assert same_weights(plain, off) and next(plain.parameters()).device.type == "cpu"


def test_an_unknown_device_names_the_flag() -> None:
    with pytest.raises(TrainingError, match=r"--device: unknown device 'gpu' \(expected auto, cpu, cuda"):
        TrainSettings(device="gpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_one_device_error() -> None:
    with pytest.raises(DeviceError, match=r"device 'cuda:1'.*pass --device cpu"):
        finetune(small_model(), None, data(), TrainSettings(steps=1, loss="ce", device="cuda:1"))


@needs_cuda
def test_cuda_with_amp_trains_on_the_gpu_and_checkpoints_cpu_tensors(tmp_path: Path) -> None:
    ck = tmp_path / "ck.pt"
    settings = TrainSettings(steps=4, loss="ce+kd", device="cuda", checkpoint=str(ck))
    result = finetune(small_model(), small_model(), data(), settings)
    assert next(result.model.parameters()).device.type == "cuda"
    assert all(x["loss"] == x["loss"] for x in result.log.losses)  # finite, not NaN
    stored = torch.load(ck, weights_only=True)
    assert stored["scaler"]["scale"] > 0
    assert all(v.device.type == "cpu" for v in stored["model"].values())
    no_amp = TrainSettings(**{**settings.to_dict(), "amp": False, "checkpoint": str(tmp_path / "plain.pt")})
    finetune(small_model(), small_model(), data(), no_amp)
    assert torch.load(tmp_path / "plain.pt", weights_only=True)["scaler"] == {}  # --no-amp: no GradScaler
