"""Built-in data (imagefolder:DIR, tensors:FILE), label scores (top1 / top5 / loss) and the named-score protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasprune_cli.builtin import data_source, label_score
from nasprune_cli.errors import LoadError, SearchError
from nasprune_cli.metrics.score import Evaluator, ScoreInfo, format_score, score_info
from nasprune_cli.searching import search

pytestmark = pytest.mark.usefixtures("one_thread")


def image_folder(root: Path, per_class: int = 3) -> Path:
    """root/{cat,dog}/i.png: 40x40 RGB images, one solid colour per class."""
    from PIL import Image

    for name, colour in (("cat", (255, 0, 0)), ("dog", (0, 0, 255))):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 40), colour).save(root / name / f"{i}.png")
    return root


def tiny_classifier(classes: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, classes),
    )


# ---- imagefolder -------------------------------------------------------------------------------------------
def test_imagefolder_resizes_crops_and_normalizes_to_the_input_shape(tmp_path: Path) -> None:
    source = data_source(f"imagefolder:{image_folder(tmp_path / 'imgs')}?batch=4")
    assert source is not None and source.batch_size == 4
    batches = list(source.batches(torch.zeros(1, 3, 32, 24)))
    assert [len(b[1]) for b in batches] == [4, 2]
    images, labels = batches[0]
    assert images.shape == (4, 3, 32, 24) and images.dtype == torch.float32
    assert labels.tolist() == [0, 0, 0, 1]  # class index = sorted folder names
    red = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(images[0, :, 5, 5], red, atol=1e-4)  # ImageNet mean / std by default


def test_imagefolder_mean_std_options_and_grayscale(tmp_path: Path) -> None:
    source = data_source(f"imagefolder:{image_folder(tmp_path / 'imgs', 1)}?mean=0.5&std=0.5")
    (images, _), *_ = list(source.batches(torch.zeros(1, 1, 8, 8)))
    assert images.shape == (2, 1, 8, 8)
    with pytest.raises(SearchError, match="mean and std need 3 value"):
        next(iter(source.batches(torch.zeros(1, 3, 8, 8))))


@pytest.mark.parametrize(
    ("suffix", "message"),
    [
        ("missing", "folder '.*missing' does not exist"),
        ("empty", "has no class subfolders"),
        ("imgs?batch=0", "option batch='0' must be a positive integer"),
        ("imgs?size=3", "unknown option 'size' \\(expected one of batch, mean, std\\)"),
    ],
)
def test_imagefolder_errors(tmp_path: Path, suffix: str, message: str) -> None:
    image_folder(tmp_path / "imgs", 1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoadError, match=message):
        data_source(f"imagefolder:{tmp_path / suffix}")


# ---- tensors -----------------------------------------------------------------------------------------------
def test_tensors_pt_and_npz(tmp_path: Path) -> None:
    x, y = torch.randn(5, 3, 4, 4, dtype=torch.float64), torch.arange(5)
    torch.save({"inputs": x, "labels": y}, tmp_path / "d.pt")
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    for name in ("d.pt", "d.npz"):
        batches = list(data_source(f"tensors:{tmp_path / name}?batch=2").batches(torch.zeros(1, 3, 4, 4)))
        assert [len(b[0]) for b in batches] == [2, 2, 1]
        assert batches[0][0].dtype == torch.float32 and batches[2][1].tolist() == [4]
    torch.save({"x": x}, tmp_path / "bare.pt")  # no labels: bare input batches
    assert isinstance(next(iter(data_source(f"tensors:{tmp_path / 'bare.pt'}").batches(x))), torch.Tensor)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"images": torch.zeros(2, 3)}, "has no key 'inputs' or 'x' \\(its keys: 'images'\\)"),
        ({"inputs": torch.zeros(4, 3), "labels": torch.zeros(3, dtype=torch.long)}, "has 4 inputs but labels of"),
        ({"inputs": torch.zeros(2, 3), "labels": torch.zeros(2)}, "labels must be integer class indices"),
        ([torch.zeros(2)], "holds a list, expected a dict of tensors"),
    ],
)
def test_tensors_errors(tmp_path: Path, content: object, message: str) -> None:
    torch.save(content, tmp_path / "d.pt")
    with pytest.raises(LoadError, match=message):
        data_source(f"tensors:{tmp_path / 'd.pt'}")
    with pytest.raises(LoadError, match="file '.*nope.pt' does not exist"):
        data_source(f"tensors:{tmp_path / 'nope.pt'}")


def test_other_specs_are_not_built_in() -> None:
    assert data_source("mypkg.data:loader") is None and label_score("mypkg:score") is None


# ---- label scores ------------------------------------------------------------------------------------------
class Fixed(nn.Module):
    """Returns the given logits whatever the input."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("logits", logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_top1_top5_and_loss() -> None:
    logits = torch.eye(6)[[0, 1, 2, 3]] * 4  # argmax = 0, 1, 2, 3
    labels = torch.tensor([0, 1, 5, 5])
    batches = [(torch.zeros(4, 1), labels)]
    model = Fixed(logits)
    top1 = label_score("top1").bind(batches, lambda b: b[0])
    assert top1(model) == 0.5 and top1.percent and top1.higher_is_better
    assert label_score("top5").bind(batches, lambda b: b[0])(model) == 1.0
    loss = label_score("loss").bind(batches, lambda b: b[0])
    expected = float(torch.nn.functional.cross_entropy(logits, labels))
    assert loss(model) == pytest.approx(expected) and not loss.higher_is_better


def test_label_scores_need_labels() -> None:
    with pytest.raises(SearchError, match="--score top1: data batch 0 carries no labels \\(got Tensor"):
        label_score("top1").bind([torch.zeros(2, 3)], lambda b: b)
    with pytest.raises(SearchError, match="--score loss: no --data given"):
        label_score("loss").bind([torch.zeros(2, 3)], lambda b: b, has_data=False)
    with pytest.raises(SearchError, match="top5 needs at least 5"):
        label_score("top5").bind([(torch.zeros(2, 1), torch.tensor([0, 1]))], lambda b: b[0])(Fixed(torch.eye(2)))


# ---- named scores ------------------------------------------------------------------------------------------
def test_score_info_reads_the_protocol() -> None:
    def val_acc(model: nn.Module) -> float:
        return 0.5

    assert score_info(val_acc, "m:val_acc") == ScoreInfo("val_acc", "m:val_acc")
    val_acc.name, val_acc.percent, val_acc.higher_is_better = "val accuracy", True, True  # type: ignore[attr-defined]
    info = score_info(val_acc, "m:val_acc")
    assert info.label == "val accuracy" and info.format(0.992) == "99.20%" and info.objective(0.5) == 0.5
    val_acc.higher_is_better = "no"  # type: ignore[attr-defined]
    with pytest.raises(SearchError, match="attribute 'higher_is_better' must be a bool \\(got str 'no'\\)"):
        score_info(val_acc, "m:val_acc")
    assert format_score(None) == "-" and format_score(1.23456) == "1.2346"


def test_the_demo_score_says_what_it_measures() -> None:
    from nasprune_cli.demo import score

    info = score_info(score, "nasprune_cli.demo:score")
    assert info.label == "validation accuracy (held-out digits)" and info.percent and info.higher_is_better


def test_a_lower_is_better_score_is_maximised_negated_and_reported_as_measured(tmp_path: Path) -> None:
    model = tiny_classifier()
    gen = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randn(8, 3, 8, 8, generator=gen), "y": torch.arange(8)}, tmp_path / "d.pt")
    seen: list[float] = []
    ev = Evaluator(
        model,
        [(torch.randn(4, 3, 8, 8), torch.arange(4))],
        score_fn=label_score("loss").bind([(torch.randn(4, 3, 8, 8), torch.arange(4))], lambda b: b[0]),
        on_score=seen.append,
    )
    assert ev() == -seen[0] and seen[0] > 0 and ev.info.direction == "lower is better"
    config = {"data": f"tensors:{tmp_path / 'd.pt'}?batch=4", "score": "loss", "max_batches": 1, "reconstruct": False}
    result = search(model, {"flops": "70%"}, torch.zeros(1, 3, 8, 8), config)
    metrics = result.summary()["metrics"]
    assert metrics["score_name"] == "loss" and metrics["score_measures"] == "cross-entropy loss"
    assert metrics["score_higher_is_better"] is False and not metrics["score_percent"]
    assert metrics["original"]["score"] > 0 and metrics["pruned"]["score"] > 0  # as measured, not negated
    assert metrics["score_label"].startswith("cross-entropy loss ") and " -> " in metrics["score_label"]
    assert result.state["best"]["score"] == -metrics["pruned"]["score"]
