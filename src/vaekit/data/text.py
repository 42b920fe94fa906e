"""Text datasets for sequence VAEs: one sentence per line, tokenized with the training split's
vocabulary (``likelihoods.tokens.Tokenizer``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError
from ..likelihoods.tokens import LEVELS, Tokenizer, split
from .dataset import DataFormatError, DataNotFoundError, Dataset, read_text, spec_option

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
    if level not in LEVELS:
        raise ConfigError(f"dataset option level={level!r}: expected one of {LEVELS}")
    positive = lambda v: v >= 1  # noqa: E731
    max_len = (
        spec_option("max_len", max_len, int, lambda v: v >= 2, "an integer >= 2")
        if max_len
        else None
    )
    max_vocab = (
        spec_option("max_vocab", max_vocab, int, positive, "a positive integer")
        if max_vocab
        else None
    )
    min_count = spec_option("min_count", min_count, int, positive, "a positive integer")
    file = Path(file).expanduser()
    if not file.is_file():
        raise DataNotFoundError(f"text file not found: {file}")
    text = read_text(file, "text")
    lines = [line for line in (" ".join(line.split()) for line in text.splitlines()) if line]
    if len(lines) < 2:
        raise DataFormatError(f"{file}: needs at least 2 non-empty lines (one sentence per line)")
    test = np.arange(len(lines)) % 10 == 9
    train_lines = [line for line, t in zip(lines, test, strict=True) if not t]
    tok = Tokenizer.fit(train_lines, level, max_vocab, min_count)
    lengths = np.array([len(split(line, level)) for line in lines])
    length = max_len or int(lengths.max()) + 1
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
