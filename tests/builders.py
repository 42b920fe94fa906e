"""Tests' shorthand for building a model from one dict of ``ModelConfig`` and ``DataInfo`` fields
(the package keeps them apart: a model is built from its config and what the data told)."""

from __future__ import annotations

from dataclasses import fields

from vaekit.config import DataInfo, ModelConfig
from vaekit.models import build_model

INFO_KEYS = {f.name for f in fields(DataInfo)}


def split_fields(**kw) -> tuple[ModelConfig, DataInfo]:
    """(ModelConfig, DataInfo) from one dict; the likelihood defaults to bernoulli (tokens for a
    seqvae) as the tests' data are binary images unless they say otherwise."""
    info = DataInfo(**{k: v for k, v in kw.items() if k in INFO_KEYS})
    model = {k: v for k, v in kw.items() if k not in INFO_KEYS}
    model.setdefault("likelihood", "tokens" if model.get("kind") == "seqvae" else "bernoulli")
    return ModelConfig(**model), info


def build(**kw):
    """``build_model`` of ``split_fields(**kw)``."""
    return build_model(*split_fields(**kw))
