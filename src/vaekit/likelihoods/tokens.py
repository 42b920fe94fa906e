"""Tokens for sequence VAEs (Bowman et al., 2016): the tokenizer and the autoregressive
categorical likelihood.

Tokens: ids 0..3 are ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>``; the rest is the vocabulary of the
training split, most frequent first (ties alphabetical). Characters, or words and punctuation
marks where a token preceded by a space carries a leading ``▁`` (as in SentencePiece), so decoding
is exact: ``decode(encode(s)) == " ".join(s.split())`` for in-vocabulary text. The vocabulary is
saved with a run (``data_info.vocab`` in ``config.json``).

A sentence is a row of ``T`` token ids: the tokens, ``<eos>``, then ``<pad>``. Data rows are
float32 (the ``Dataset`` convention); ids are exact integers.

p(x|z) = Π_t Cat(x_t | x_<t, z) is an ``AutoregressiveCategorical`` over a context z and an
autoregressive network (the sequence model's decoder, ``models.sequence``); ``TokenLikelihood``
declares the support (token ids ending in ``<eos>``) and turns rows back into sentences.
"""

from __future__ import annotations

import re
from collections import Counter

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, constraints

from ..distributions import SupportError
from .base import Likelihood, check_finite

__all__ = [
    "SPECIALS",
    "PAD",
    "BOS",
    "EOS",
    "UNK",
    "Tokenizer",
    "AutoregressiveCategorical",
    "TokenLikelihood",
    "split",
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
        """Next-token logits ``(N, t, V)``: never <pad> or <bos>, and <eos> at position T − 1
        (a row ends there), so p(x|c) is normalised over the rows that fit in T tokens."""
        logits = self.net(context, inputs)  # (N, t, V)
        logits = logits.index_fill(-1, torch.tensor([PAD, BOS], device=logits.device), -torch.inf)
        if logits.shape[1] == self.length:
            last = torch.full_like(logits[:, -1], -torch.inf)
            last[:, EOS] = 0.0
            logits = torch.cat([logits[:, :-1], last[:, None]], 1)
        return logits

    def log_prob(self, x: Tensor) -> Tensor:
        shape = torch.broadcast_shapes(x.shape[:-1], self.batch_shape)  # (*sample, *batch)
        x = x.long().expand(*shape, self.length).reshape(-1, self.length)  # (N, T)
        ctx = self.context.expand(*shape, -1).reshape(-1, self.context.shape[-1])
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
    """Likelihood head for token rows ``(T,)`` over the vocabulary ``vocab``: p(x|z) is
    ``AutoregressiveCategorical(context, decoder)`` with the model's autoregressive decoder."""

    name = "tokens"
    discrete = True
    is_text = True

    def __init__(self, event_shape, vocab: list[str] | None = None):
        super().__init__(tuple(event_shape))
        if not vocab:
            raise ValueError(
                "the tokens likelihood needs a vocabulary (data_info.vocab); it is filled from "
                "a text dataset (text:PATH, shakespeare)"
            )
        if len(self.event_shape) != 1:
            raise ValueError(f"token rows have shape (T,), got event shape {self.event_shape}")
        self.tokenizer = Tokenizer(list(vocab))

    def autoregressive(self, context: Tensor, decoder: nn.Module) -> AutoregressiveCategorical:
        """p(x|z): ``context`` ``(*batch, C)``, ``decoder(context, inputs) → logits``."""
        return AutoregressiveCategorical(context, decoder, self.event_shape[0])

    def check(self, x: Tensor) -> None:
        check_finite(self.name, x)
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

    def units(self, x: Tensor) -> Tensor:
        """Scored tokens per row (words or characters, plus ``<eos>``): ``(N,)``."""
        return (x != PAD).sum(-1)
