"""The model family and its registry.

Every kind is one module (``vae`` — the one-layer VAE, which imports no other family member —
``autoencoder``, ``hierarchical``, ``sequence``, ``deep``, ``flows`` (posteriors of the one-layer
kinds), ``vqvae``) plus one ``MODELS`` entry here. A model is built
from its config and what the data told (``DataInfo``) alone: ``build_model(cfg, info)``.
"""

from __future__ import annotations

import dataclasses

from ..config import AUTO, DataInfo, ModelConfig
from ..distributions import SCALE_HEADS
from ..likelihoods import LIKELIHOODS
from ..networks import ARCHS, INITS, SEQUENCE_ARCHS
from ..registry import Registry
from .autoencoder import Autoencoder, build_autoencoder
from .deep import DeepVAE, build_deep
from .flows import POSTERIORS, FlowVAE, build_flow_vae
from .hierarchical import HierarchicalVAE, build_hierarchical
from .sequence import SequenceVAE, build_sequence_vae
from .vae import VAE, build_vae
from .vqvae import VQVAE, build_vqvae

__all__ = [
    "MODELS",
    "VAE",
    "Autoencoder",
    "DeepVAE",
    "FlowVAE",
    "POSTERIORS",
    "HierarchicalVAE",
    "SequenceVAE",
    "VQVAE",
    "build_model",
    "resolve_auto",
]


def _build_one_layer(cfg: ModelConfig, info: DataInfo) -> VAE:
    """Kinds vae / cvae: the Gaussian posterior (``models/vae.py``) or a flow of it
    (``model.posterior: iaf | planar``, ``models/flows.py``)."""
    return build_vae(cfg, info) if cfg.posterior == "gaussian" else build_flow_vae(cfg, info)


MODELS: Registry = Registry("model kind")
MODELS.register("vae", _build_one_layer, "one latent layer (posterior gaussian | iaf | planar)")
MODELS.register("cvae", _build_one_layer, "conditional on labels (y)")
MODELS.register("hvae", build_hierarchical, "hierarchy of latent layers, top-down inference")
MODELS.register("seqvae", build_sequence_vae, "text: sequence encoder, autoregressive decoder")
MODELS.register("ae", build_autoencoder, "plain autoencoder (no bound)")
MODELS.register("deep", build_deep, "deep hierarchy of spatial latent maps (NVAE/VDVAE)")
MODELS.register(
    "vqvae", build_vqvae, "vector-quantized codes + autoregressive code prior (no bound)"
)


def resolve_auto(cfg: ModelConfig, info: DataInfo) -> ModelConfig:
    """``cfg`` with its ``auto`` fields decided from the data alone (a copy): likelihood tokens
    for text, tabular for tables, Bernoulli for 8-bit data, Gaussian for real values; kind
    ``seqvae`` for tokens, else ``vae``; arch ``gru`` for a ``seqvae``, else ``mlp``. (A dataset's
    own declared defaults are applied before this, by the run setup.)"""
    cfg = dataclasses.replace(cfg)
    if cfg.likelihood == AUTO:
        if cfg.kind == "deep" and info.levels == 256:
            cfg.likelihood = "logistic_mixture"
        elif info.vocab:
            cfg.likelihood = "tokens"
        elif info.columns:
            cfg.likelihood = "tabular"
        else:
            cfg.likelihood = "bernoulli" if info.levels == 256 else "gaussian"
    if cfg.kind == AUTO:
        cfg.kind = "seqvae" if LIKELIHOODS.get(cfg.likelihood).is_text else "vae"
    if cfg.arch == AUTO:
        cfg.arch = {"seqvae": "gru", "deep": "resnet"}.get(cfg.kind, "mlp")
    return cfg


def build_model(cfg: ModelConfig, info: DataInfo) -> VAE:
    """A fresh model of kind ``cfg.kind`` (``MODELS``) for data described by ``info``."""
    if not info.event_shape:
        raise ValueError("data_info has no event_shape; it is filled from the data")
    cfg = resolve_auto(cfg, info)
    build = MODELS.get(cfg.kind)
    if cfg.posterior not in POSTERIORS:
        raise ValueError(f"model.posterior must be one of {POSTERIORS}, got {cfg.posterior!r}")
    if cfg.posterior != "gaussian" and cfg.kind not in ("vae", "cvae"):
        raise ValueError(f"model.posterior {cfg.posterior} is for kinds vae and cvae")
    text = LIKELIHOODS.get(cfg.likelihood).is_text
    if text != (cfg.kind == "seqvae"):
        raise ValueError(
            f"kind {cfg.kind} cannot use the {cfg.likelihood} likelihood: token rows need kind "
            "seqvae with likelihood tokens, and a seqvae needs them"
        )
    if cfg.init not in INITS:
        raise ValueError(f"model.init must be one of {INITS}, got {cfg.init!r}")
    if cfg.init != "he" and cfg.arch != "mlp":
        raise ValueError(f"model.init {cfg.init} applies to arch mlp, not {cfg.arch!r}")
    if cfg.scale_head not in SCALE_HEADS:
        raise ValueError(f"model.scale_head must be one of {SCALE_HEADS}, got {cfg.scale_head!r}")
    if cfg.scale_head != "softplus" and cfg.kind not in ("vae", "cvae"):
        raise ValueError(f"model.scale_head {cfg.scale_head} is for kinds vae and cvae")
    if cfg.arch not in ARCHS and cfg.arch not in SEQUENCE_ARCHS:
        ARCHS.get(cfg.arch)  # the error names the choices
    model = build(cfg, info)
    model.data_info = info  # with ``model.config``: all that rebuilds the model
    return model
