"""The text benchmark's task: a small BERT classifying synthetic token sequences (nothing is downloaded).

A sequence of SEQ_LEN tokens starts with a [CLS] id (0); CLASSES classes each own KEYS_PER_CLASS key tokens; a
sequence of class k holds OWN key tokens of k and NOISE key tokens of one other class, at random positions among
filler tokens. The label is the class with the most key tokens (OWN > NOISE), so the model has to find the key tokens
and count them per class, wherever they are.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

CLASSES = 8
KEYS_PER_CLASS = 3
OWN, NOISE = 3, 2
SEQ_LEN = 16
VOCAB = 40  # 0: [CLS], 1: unused, 2..25: key tokens, 26..39: filler
FIRST_FILLER = 2 + CLASSES * KEYS_PER_CLASS
# hidden 64 (kept whole by nasprune), 4 layers of 4 heads and an MLP of 256: heads and MLPs hold 95% of the params,
# so 50% of the params is reachable by pruning them alone
CONFIG = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": SEQ_LEN,
    "num_labels": CLASSES,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}


@dataclass
class Split:
    """Token ids [n, SEQ_LEN] (int64) and labels [n]."""

    ids: torch.Tensor
    labels: torch.Tensor

    def batches(self, batch_size: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first `count` batches, in order: (ids, labels) tuples (nasprune's default collect takes the ids)."""
        return [
            (self.ids[i : i + batch_size], self.labels[i : i + batch_size])
            for i in range(0, batch_size * count, batch_size)
        ]


def make_split(n: int, seed: int) -> Split:
    """`n` labelled sequences drawn with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(FIRST_FILLER, VOCAB, (n, SEQ_LEN), generator=gen)
    ids[:, 0] = 0
    labels = torch.randint(0, CLASSES, (n,), generator=gen)
    own = 2 + KEYS_PER_CLASS * labels[:, None] + torch.randint(0, KEYS_PER_CLASS, (n, OWN), generator=gen)
    other = (labels[:, None] + torch.randint(1, CLASSES, (n, 1), generator=gen)) % CLASSES
    noise = 2 + KEYS_PER_CLASS * other + torch.randint(0, KEYS_PER_CLASS, (n, NOISE), generator=gen)
    positions = torch.argsort(torch.rand(n, SEQ_LEN - 1, generator=gen), 1)[:, : OWN + NOISE] + 1
    ids.scatter_(1, positions, torch.cat([own, noise], 1))
    return Split(ids, labels)


def build_model(seed: int) -> nn.Module:
    """BertForSequenceClassification with random weights from CONFIG."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(**CONFIG)).eval()


def logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """The classifier's logits (a transformers ModelOutput's, or a plain tensor's)."""
    out = model(input_ids=ids)
    return out.logits if hasattr(out, "logits") else out


def accuracy(model: nn.Module, split: Split, batch_size: int = 256) -> float:
    """Top-1 accuracy on a split, eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(split.labels), batch_size):
            pred = logits(model, split.ids[i : i + batch_size]).argmax(-1)
            correct += int((pred == split.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(split.labels)


def train(model: nn.Module, split: Split, steps: int, lr: float, seed: int, batch_size: int = 32) -> nn.Module:
    """AdamW (weight decay 0.01) with a warm-up then cosine decay of the rate, seeded batch order; in place."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(split.labels), (batch_size,), generator=gen)
        loss = nn.functional.cross_entropy(logits(model, split.ids[idx]), split.labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


def clone(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode."""
    return copy.deepcopy(model).eval()
