"""The dataset container and the data errors every loader raises."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import ConfigError

__all__ = ["Dataset", "DataFormatError", "DataNotFoundError", "make_dataset", "spec_option"]


class DataNotFoundError(FileNotFoundError):
    """Data files are missing and could not be (or were not allowed to be) downloaded."""


class DataFormatError(ValueError):
    """A data file or array exists but its content is not what the loader expects."""


def read_text(path: Path, what: str, encoding: str = "utf-8") -> str:
    """The file at ``path`` as text; ``DataFormatError`` if it is not ``encoding`` or holds NUL
    bytes (a binary file). ``what``: the kind of text the message names ("text", "CSV text")."""
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text ({e})") from None
    if "\x00" in text:
        raise DataFormatError(f"{path}: holds NUL bytes, a binary file rather than {what}")
    return text


def spec_option(name: str, text, kind: Callable = int, ok: Callable | None = None, what: str = ""):
    """A dataset spec's option (``?name=text``) as ``kind(text)`` satisfying ``ok``; a
    ConfigError naming the option otherwise (``what``: what it must be)."""
    try:
        value = kind(text)
        good = ok is None or ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ConfigError(f"dataset option {name}={text!r}: expected {what or kind.__name__}")
    return value


@dataclass(frozen=True, repr=False)
class Dataset:
    """A whole dataset in memory.

    ``train``/``test`` are ``(N, *event_shape)``: uint8 levels 0..255 for 8-bit data (images are
    ``(C, H, W)``), float32 otherwise (e.g. vectors ``(D,)``). Labels are int64 ``(N,)`` or None.
    A dataset with known generative factors also has ``factors`` (train, test), int64 ``(N, K)``
    (its labels are then one of them, e.g. the shape class).
    """

    name: str
    train: torch.Tensor
    test: torch.Tensor
    train_labels: torch.Tensor | None
    test_labels: torch.Tensor | None
    event_shape: tuple[int, ...]
    schema: dict | None = None  # tables: column types and statistics (see ``tables``)
    vocab: tuple[str, ...] | None = None  # text: token of each id (see ``text``)
    # Config values this dataset implies when the config leaves them ``auto`` (for example
    # ``{"model.likelihood": "tokens"}``), set by ``load_dataset`` from the registry entry.
    implies: dict = field(default_factory=dict)
    # Datasets generated from known factors (the ``factors`` protocol): int64 (N, K) factor
    # indices of the train and test rows, the factors' names, and the generator that renders new
    # observations from factors (a ``disentangle.FactorDataset``, for the FactorVAE score).
    factors: tuple[torch.Tensor, torch.Tensor] | None = None
    factor_names: tuple[str, ...] | None = None
    factor_source: object | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "event_shape", tuple(int(d) for d in self.event_shape))
        for split, x, y in (
            ("train", self.train, self.train_labels),
            ("test", self.test, self.test_labels),
        ):
            if tuple(x.shape[1:]) != self.event_shape:
                raise DataFormatError(
                    f"{self.name}: {split} has shape {tuple(x.shape)}, "
                    f"expected (N, {', '.join(map(str, self.event_shape))})"
                )
            if x.dtype not in (torch.uint8, torch.float32):
                raise DataFormatError(
                    f"{self.name}: {split} is {x.dtype}, expected uint8 or float32"
                )
            if y is not None and (y.dtype != torch.int64 or tuple(y.shape) != (len(x),)):
                raise DataFormatError(
                    f"{self.name}: {split} labels must be int64 of shape "
                    f"({len(x)},), got {y.dtype} {tuple(y.shape)}"
                )
        if self.factors is not None:
            if len(self.factors) != 2:
                raise DataFormatError(f"{self.name}: factors must be a (train, test) pair")
            pairs = zip(("train", "test"), (self.train, self.test), self.factors, strict=True)
            for split, x, f in pairs:
                if f.dtype != torch.int64 or f.dim() != 2 or len(f) != len(x):
                    raise DataFormatError(
                        f"{self.name}: {split} factors must be int64 of shape ({len(x)}, K), "
                        f"got {f.dtype} {tuple(f.shape)}"
                    )
        if self.train.dtype != self.test.dtype:
            raise DataFormatError(
                f"{self.name}: train is {self.train.dtype} but test is {self.test.dtype}"
            )

    @property
    def n_classes(self) -> int | None:
        """1 + the largest label of either split, or None without labels."""
        labels = [t for t in (self.train_labels, self.test_labels) if t is not None and len(t)]
        return int(max(int(t.max()) for t in labels)) + 1 if labels else None

    @property
    def discrete(self) -> bool:
        """True when the data are uint8 levels 0..255."""
        return self.train.dtype == torch.uint8

    def __repr__(self) -> str:
        labels = "labelled" if self.train_labels is not None else "unlabelled"
        return (
            f"Dataset({self.name!r}, train={tuple(self.train.shape)}, "
            f"test={tuple(self.test.shape)}, {self.train.dtype}, {labels})"
        )


def make_dataset(name: str, x: np.ndarray, y: np.ndarray | None, test: np.ndarray) -> Dataset:
    """Split arrays ``x`` (N, ...) and labels ``y`` by the boolean mask ``test`` into a Dataset."""
    train = ~test

    def labels(mask: np.ndarray) -> torch.Tensor | None:
        return None if y is None else torch.from_numpy(y[mask].astype(np.int64))

    return Dataset(
        name=name,
        train=torch.from_numpy(np.ascontiguousarray(x[train])),
        test=torch.from_numpy(np.ascontiguousarray(x[test])),
        train_labels=labels(train),
        test_labels=labels(test),
        event_shape=x.shape[1:],
    )
