"""Text datasets for sequence VAEs: one sentence per line, tokenized with the training split's
vocabulary (``likelihoods.tokens.Tokenizer``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..likelihoods.tokens import Tokenizer, split
from .dataset import DataNotFoundError, Dataset

__all__ = ["load_text"]


def load_text(
    file: Path,
    name: str,
    level: str = "char",
    max_len: str | int | None = None,
    max_vocab: str | int | None = None,
    min_count: str | int = 1,
):
    """A ``Dataset`` of the non-empty lines of ``file``: every 10th line (index % 10 == 9) is the
    test set; the vocabulary comes from the training lines. Rows have ``max_len`` tokens (default:
    the longest line + 1); longer lines are dropped."""
    file = Path(file).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"text file not found: {file}")
    lines = [" ".join(line.split()) for line in file.read_text(encoding="utf-8").splitlines()]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        raise ValueError(f"{file}: needs at least 2 non-empty lines (one sentence per line)")
    test = np.arange(len(lines)) % 10 == 9
    train_lines = [line for line, t in zip(lines, test, strict=True) if not t]
    tok = Tokenizer.fit(train_lines, level, int(max_vocab) if max_vocab else None, int(min_count))
    lengths = np.array([len(split(line, level)) for line in lines])
    length = int(max_len) if max_len else int(lengths.max()) + 1
    keep = lengths <= length - 1
    kept = [line for line, k in zip(lines, keep, strict=True) if k]
    x = tok.rows(kept, length)
    test = test[keep]
    return Dataset(
        name=name,
        train=x[torch.from_numpy(~test)],
        test=x[torch.from_numpy(test)],
        train_labels=None,
        test_labels=None,
        event_shape=(length,),
        vocab=tuple(tok.vocab),
    )
