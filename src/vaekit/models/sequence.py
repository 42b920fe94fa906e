"""The sequence VAE for text (Bowman et al., 2016): ``kind: seqvae``.

A sequence encoder (GRU or Transformer) reads a row of token ids and gives q(z|x); the decoder is
an autoregressive network over tokens, p(x|z) = Π_t Cat(x_t | x_<t, z), with word dropout. The
decoder network is the model's ``decoder``; the ``tokens`` likelihood head turns (z, decoder) into
the distribution (``AutoregressiveCategorical``) and knows the vocabulary.
"""

from __future__ import annotations

from torch import Tensor
from torch.distributions import Distribution

from ..config import DataInfo, ModelConfig
from ..likelihoods.tokens import TokenLikelihood
from ..networks import SEQUENCE_ARCHS
from ..priors import StandardNormalPrior
from ..registry import accepted_options
from .vae import VAE, likelihood_of

__all__ = ["SequenceVAE", "build_sequence_vae"]


class SequenceVAE(VAE):
    """A VAE on token rows ``(T,)`` whose decoder is autoregressive (see the module doc)."""

    likelihood: TokenLikelihood

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Runs saved before the decoder became the model's own kept it inside the likelihood.
        self._register_load_state_dict_pre_hook(_rename_legacy_decoder)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Distribution:
        """p(x|z): batch shape ``z.shape[:-1]`` = ``(*S, B)``, event ``(T,)``."""
        return self.likelihood.autoregressive(z, self.decoder)


def _rename_legacy_decoder(state_dict, prefix, *args) -> None:
    old = prefix + "likelihood.net."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "decoder." + key[len(old) :]] = state_dict.pop(key)


def build_sequence_vae(cfg: ModelConfig, info: DataInfo) -> SequenceVAE:
    """``kind: seqvae``: encoder/decoder ``arch`` gru | transformer, width ``hidden[0]``,
    ``embed_dim``, ``seq_layers``, ``heads``, ``word_dropout``; the ``tokens`` likelihood over the
    data's vocabulary."""
    if cfg.arch not in SEQUENCE_ARCHS:
        raise ValueError(
            f"a seqvae needs a sequence architecture ({' | '.join(SEQUENCE_ARCHS)}), "
            f"got arch {cfg.arch!r}; e.g. --arch gru"
        )
    if cfg.likelihood != TokenLikelihood.name:
        raise ValueError(f"a seqvae models token rows: likelihood tokens, not {cfg.likelihood!r}")
    if cfg.prior != "normal":
        raise ValueError("a seqvae supports only the standard normal prior (token inputs)")
    likelihood = likelihood_of(cfg, info)
    enc_cls, dec_cls = SEQUENCE_ARCHS[cfg.arch]
    length, v = likelihood.event_shape[0], len(likelihood.tokenizer.vocab)
    options = {
        "embed_dim": cfg.embed_dim,
        "hidden": cfg.hidden[0] if cfg.hidden else 256,
        "layers": cfg.seq_layers,
        "heads": cfg.heads,
        "word_dropout": cfg.word_dropout,
        "max_len": length,
    }
    encoder = enc_cls(v, 2 * cfg.latent_dim, **accepted_options(enc_cls, options))
    decoder = dec_cls(v, cfg.latent_dim, **accepted_options(dec_cls, options))
    return SequenceVAE(
        encoder, decoder, likelihood, cfg.latent_dim, config=cfg, prior=StandardNormalPrior()
    )
