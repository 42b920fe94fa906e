"""Text for sequence VAEs (Bowman et al., 2016): tokenizer, text datasets, the autoregressive
categorical likelihood, and the ``seqvae`` model.

Tokens: ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; the rest is the vocabulary of the
training split, most frequent first (ties alphabetical). Characters, or words and punctuation
marks where a token preceded by a space carries a leading ``▁`` (as in SentencePiece), so decoding
is exact: ``decode(encode(s)) == " ".join(s.split())`` for in-vocabulary text. The vocabulary is
saved with a run (``model.vocab`` in ``config.json``).

A sentence is a row of ``T`` token ids: the tokens, ``<eos>``, then ``<pad>``. Data rows are
float32 (the ``Dataset`` convention); ids are exact integers.

The ``seqvae`` is a plain ``VAE`` built from shared parts: a sequence encoder (GRU or Transformer)
→ q(z|x); the decoder network is the identity on z; the likelihood head ``TokenLikelihood`` holds
the autoregressive decoder p(x|z) = Π_t Cat(x_t | x_<t, z) and its word dropout.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from .config import ModelConfig
from .distributions import Likelihood, SupportError

__all__ = [
    "SPECIALS",
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "Tokenizer",
    "AutoregressiveCategorical",
    "TokenLikelihood",
    "build_sequence_vae",
    "load_text",
]

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
SPACE = "▁"
LEVELS = ("char", "word")
_WORD = re.compile(r"(\s*)(\w+|[^\w\s])")


class Tokenizer:
    """Text ↔ token ids for a vocabulary whose first four entries are ``SPECIALS``."""

    def __init__(self, vocab: list[str]):
        if tuple(vocab[:4]) != SPECIALS:
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {vocab[:4]}")
        self.vocab = list(vocab)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.level = "word" if any(t.startswith(SPACE) for t in self.vocab[4:]) else "char"
        self._unk = (SPACE if self.level == "word" else "") + SPECIALS[UNK]  # words: spaced

    @classmethod
    def fit(
        cls, lines: list[str], level: str = "char", max_vocab: int | None = None, min_count: int = 1
    ) -> Tokenizer:
        """The vocabulary of ``lines``: tokens seen ≥ ``min_count`` times, most frequent first,
        at most ``max_vocab`` entries including the four specials."""
        counts = Counter(t for line in lines for t in split(line, level))
        tokens = sorted(
            (t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t)
        )
        if max_vocab is not None:
            tokens = tokens[: max(max_vocab - len(SPECIALS), 0)]
        return cls([*SPECIALS, *tokens])

    def encode(self, line: str) -> list[int]:
        """Token ids of one line (without ``<eos>``); unknown tokens become ``<unk>``."""
        return [self.index.get(t, UNK) for t in split(line, self.level)]

    def decode(self, ids) -> str:
        """Text of one row of ids, up to its first ``<eos>`` (``<pad>``/``<bos>`` dropped)."""
        out = []
        for i in (int(v) for v in ids):
            if i == EOS:
                break
            if i not in (PAD, BOS):
                out.append(self.vocab[i] if UNK < i < len(self.vocab) else self._unk)
        return "".join(out).replace(SPACE, " ").strip()

    def rows(self, lines: list[str], length: int) -> Tensor:
        """``(N, length)`` float32 rows: ids, ``<eos>``, ``<pad>``…; lines fit in length − 1."""
        out = np.full((len(lines), length), PAD, dtype=np.float32)
        for r, line in enumerate(lines):
            ids = self.encode(line)
            if len(ids) > length - 1:
                raise ValueError(f"{line!r} has {len(ids)} tokens; at most {length - 1} fit")
            out[r, : len(ids)] = ids
            out[r, len(ids)] = EOS
        return torch.from_numpy(out)


def split(line: str, level: str) -> list[str]:
    """Tokens of a line: its characters, or words/punctuation with ``▁`` marking a space before."""
    line = " ".join(line.split())
    if level == "char":
        return list(line)
    if level == "word":
        return [
            (SPACE if m.group(1) or m.start() == 0 else "") + m.group(2)
            for m in _WORD.finditer(line)
        ]
    raise ValueError(f"tokenizer level must be one of {LEVELS}, got {level!r}")


# --------------------------------------------------------------------------------------------
# Text datasets: one sentence per line
# --------------------------------------------------------------------------------------------


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
    from .data import DataNotFoundError, Dataset

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


# --------------------------------------------------------------------------------------------
# The autoregressive likelihood
# --------------------------------------------------------------------------------------------


class AutoregressiveCategorical(Distribution):
    """p(x|c) = Π_t Cat(x_t; softmax(logits_t(x_<t, c))) over rows of T ids ending in ``<eos>``.

    ``context`` is ``(*batch, C)`` (z, possibly with a condition); ``log_prob(x)`` runs the decoder
    with teacher forcing and sums over the tokens up to and including ``<eos>``, nats, shape
    ``batch``. ``<pad>`` and ``<bos>`` are never emitted. ``sample`` draws tokens one at a time;
    ``mean`` is the greedy decode (the most likely token at each step), used for display.
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.nonnegative_integer, 1)

    def __init__(self, context: Tensor, net: nn.Module, length: int):
        self.context, self.net, self.length = context, net, length
        super().__init__(context.shape[:-1], torch.Size([length]), validate_args=False)

    def _logits(self, inputs: Tensor, context: Tensor) -> Tensor:
        logits = self.net(context, inputs)  # (N, t, V)
        return logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), -torch.inf)

    def log_prob(self, x: Tensor) -> Tensor:
        shape = self.batch_shape
        x = x.long().expand(*shape, self.length).reshape(-1, self.length)  # (N, T)
        ctx = self.context.reshape(-1, self.context.shape[-1])
        inputs = torch.cat([torch.full_like(x[:, :1], BOS), x[:, :-1]], 1)
        logp = F.log_softmax(self._logits(inputs, ctx), -1)
        token_lp = logp.gather(-1, x.unsqueeze(-1)).squeeze(-1)  # (N, T)
        return torch.where(x != PAD, token_lp, 0.0).sum(-1).view(shape)

    @torch.no_grad()
    def _generate(self, sample_shape: torch.Size, greedy: bool) -> Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        ctx = self.context.expand(*shape, -1).reshape(-1, self.context.shape[-1])
        n = len(ctx)
        seq = torch.full((n, self.length + 1), PAD, dtype=torch.long, device=ctx.device)
        seq[:, 0] = BOS
        done = torch.zeros(n, dtype=torch.bool, device=ctx.device)
        was_training = self.net.training
        self.net.eval()  # no word dropout while generating
        try:
            for t in range(self.length):
                logits = self._logits(seq[:, : t + 1], ctx)[:, -1]
                if greedy:
                    tok = logits.argmax(-1)
                else:
                    tok = torch.distributions.Categorical(logits=logits).sample()
                if t == self.length - 1:
                    tok = torch.full_like(tok, EOS)  # a row always ends with <eos>
                seq[:, t + 1] = torch.where(done, PAD, tok)
                done |= tok == EOS
                if done.all():
                    break
        finally:
            self.net.train(was_training)
        return seq[:, 1:].float().view(*shape, self.length)

    def sample(self, sample_shape=torch.Size()) -> Tensor:
        return self._generate(torch.Size(sample_shape), greedy=False)

    @property
    def mean(self) -> Tensor:
        return self._generate(torch.Size(), greedy=True)


class TokenLikelihood(Likelihood):
    """Likelihood head for token rows ``(T,)``: decoder outputs (the context, ``(*batch, C)``) →
    ``AutoregressiveCategorical``. Holds the autoregressive network and the tokenizer."""

    name = "tokens"

    def __init__(self, event_shape, net: nn.Module, vocab: list[str]):
        super().__init__(tuple(event_shape))
        self.net = net
        self.tokenizer = Tokenizer(vocab)

    def dist(self, params: Tensor) -> Distribution:
        return AutoregressiveCategorical(params, self.net, self.event_shape[0])

    def check(self, x: Tensor) -> None:
        super().check(x)
        v = len(self.tokenizer.vocab)
        if (x != x.round()).any() or (x < 0).any() or (x >= v).any():
            raise SupportError(f"token rows need integer ids 0..{v - 1}")
        if not (x == EOS).any(-1).all():
            raise SupportError("every token row must contain <eos> (id 2)")

    def texts(self, x: Tensor) -> list[str]:
        """The sentences of token rows ``(N, T)``."""
        return [self.tokenizer.decode(row) for row in x]

    def display(self, x: Tensor) -> Tensor:
        return x

    def n_tokens(self, x: Tensor) -> Tensor:
        """Scored tokens per row (words or characters, plus ``<eos>``): ``(N,)``."""
        return (x != PAD).sum(-1)


def build_sequence_vae(cfg: ModelConfig):
    """``kind: seqvae``: encoder/decoder ``arch`` gru | transformer, width ``hidden[0]``,
    ``embed_dim``, ``seq_layers``, ``heads``, ``word_dropout``; needs ``vocab`` (from the data)."""
    from .model import VAE
    from .networks import SEQUENCE_ARCHS, accepted_options
    from .priors import make_prior

    if not cfg.vocab:
        raise ValueError("a seqvae needs a vocabulary: train it on text data (dataset text:PATH)")
    if cfg.arch not in SEQUENCE_ARCHS:
        raise ValueError(
            f"a seqvae needs a sequence architecture ({' | '.join(SEQUENCE_ARCHS)}), "
            f"got arch {cfg.arch!r}; e.g. --arch gru"
        )
    if cfg.prior != "normal":
        raise ValueError("a seqvae supports only the standard normal prior (token inputs)")
    if len(cfg.event_shape) != 1:
        raise ValueError(f"token rows have shape (T,), got event_shape {cfg.event_shape}")
    enc_cls, dec_cls = SEQUENCE_ARCHS[cfg.arch]
    length, v = cfg.event_shape[0], len(cfg.vocab)
    options = {
        "embed_dim": cfg.embed_dim,
        "hidden": cfg.hidden[0] if cfg.hidden else 256,
        "layers": cfg.seq_layers,
        "heads": cfg.heads,
        "word_dropout": cfg.word_dropout,
        "max_len": length,
    }
    encoder = enc_cls(v, 2 * cfg.latent_dim, **accepted_options(enc_cls, options))
    net = dec_cls(v, cfg.latent_dim, **accepted_options(dec_cls, options))
    likelihood = TokenLikelihood((length,), net, cfg.vocab)
    return VAE(
        encoder,
        nn.Identity(),
        likelihood,
        cfg.latent_dim,
        config=cfg,
        prior=make_prior("normal", (length,)),
    )
