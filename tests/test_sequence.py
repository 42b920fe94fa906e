"""The sequence VAE: tokenizer round trips, text datasets, the autoregressive likelihood (exact
normalization and teacher forcing), word dropout, and sentences through the command line."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import build
from vaekit.cli import main
from vaekit.data import load_dataset
from vaekit.likelihoods.tokens import (
    BOS,
    EOS,
    PAD,
    SPECIALS,
    UNK,
    AutoregressiveCategorical,
    Tokenizer,
)
from vaekit.networks import GRUDecoder, _word_dropout

CORPUS = [
    "First Citizen:",
    "Before we proceed any further, hear me speak.",
    "You are all resolved rather to die than to famish?",
    "Resolved. resolved.",
    "We know't, we know't.",
]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="abcdeXYZ .,!?'\t", max_size=40))
def test_character_tokenizer_round_trips_text(text):
    tok = Tokenizer.fit(["abcdeXYZ .,!?'"], "char")
    assert tok.level == "char"
    assert tok.decode(tok.encode(text)) == " ".join(text.split())


WORDS = ["we", "know", "t", "Before", "hear", "me", "speak", ",", ".", "'", "?", ":"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(WORDS), st.sampled_from(["", " ", "  "])), max_size=12))
def test_word_tokenizer_round_trips_text(parts):
    pairs = [a + sep + b for a in WORDS for b in WORDS for sep in ("", " ")]
    tok = Tokenizer.fit(pairs, "word")  # every token, with and without a space before it
    assert tok.level == "word"
    text = ""
    for w, sep in parts:  # two words never touch: "we" + "know" would be the new word "weknow"
        glue = " " if text[-1:].isalnum() and w[0].isalnum() else ""
        text += glue + w + sep
    ids = tok.encode(text)
    assert UNK not in ids
    assert tok.decode(ids) == " ".join(text.split())


def test_vocabulary_is_frequency_ordered_and_unknowns_map_to_unk():
    tok = Tokenizer.fit(["a b b c c c"], "word", max_vocab=6)
    assert tok.vocab == [*SPECIALS, "▁c", "▁b"]
    assert tok.encode("c b a") == [4, 5, UNK]
    assert tok.decode([4, 5, UNK, EOS, 4]) == "c b <unk>"
    rows = tok.rows(["c b", "b"], 4)
    assert rows.tolist() == [[4, 5, EOS, PAD], [5, EOS, PAD, PAD]]
    with pytest.raises(ValueError, match="at most 3"):
        tok.rows(["c b c b"], 4)


def test_text_dataset_splits_lines_and_saves_its_vocabulary(tmp_path):
    lines = [f"line {i} says {'hello ' * (i % 3)}" for i in range(30)] + ["", "  "]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines))
    ds = load_dataset(f"text:{path}?level=word")
    assert (len(ds.train), len(ds.test)) == (27, 3)  # every 10th non-empty line is a test line
    tok = Tokenizer(list(ds.vocab))
    assert tok.decode(ds.test[0]) == "line <unk> says"  # "9" occurs in the test split only
    assert ds.train.dtype == torch.float32 and ((ds.train == EOS).sum(1) == 1).all()
    short = load_dataset(f"text:{path}?level=word&max_len=5")  # longer lines are dropped
    assert short.event_shape == (5,) and len(short.train) + len(short.test) == 20
    with pytest.raises(FileNotFoundError, match="not found"):
        load_dataset(f"text:{tmp_path / 'missing.txt'}")
    with pytest.raises(ValueError, match="level"):
        load_dataset(f"text:{path}?level=bytes")


def test_shakespeare_entry_reads_the_shared_corpus():
    ds = load_dataset("shakespeare?level=char", test_limit=5)
    assert ds.event_shape == (64,) and len(ds.train) == 29_500
    assert Tokenizer(list(ds.vocab)).decode(ds.train[0]) == "First Citizen:"


def _decoder(v=6, word_dropout=0.0):
    torch.manual_seed(0)
    return GRUDecoder(v, 3, embed_dim=4, hidden=8, word_dropout=word_dropout)


def test_autoregressive_likelihood_is_normalized_over_all_rows():
    """Vocabulary: specials + 2 tokens, T = 3: the rows ending in <eos> within T tokens (the
    support: a row's last position is <eos> when no earlier one is) carry probability 1."""
    net = _decoder().eval()
    context = torch.randn(2, 3)
    emit = [UNK, 4, 5]  # tokens that can be emitted besides <eos>
    rows = [
        [*p, EOS] + [PAD] * (2 - len(p))
        for n in range(3)
        for p in itertools.product(emit, repeat=n)
    ]
    x = torch.tensor(rows, dtype=torch.float32)  # (13, 3)
    dist = AutoregressiveCategorical(context[:, None].expand(2, len(x), 3), net, 3)
    mass = dist.log_prob(x).exp().sum(1)  # (2,)
    torch.testing.assert_close(mass, torch.ones(2))


def test_teacher_forcing_equals_step_by_step_scoring():
    net = _decoder().eval()
    context = torch.randn(4, 3)
    x = torch.tensor([[4, 5, EOS, PAD, PAD], [5, EOS, PAD, PAD, PAD]] * 2, dtype=torch.float32)
    fast = AutoregressiveCategorical(context, net, 5).log_prob(x)
    slow = torch.zeros(4)
    for t in range(3):
        prefix = torch.cat([torch.full((4, 1), BOS), x[:, :t].long()], 1)
        logits = net(context, prefix)[:, -1].index_fill(-1, torch.tensor([PAD, BOS]), -torch.inf)
        lp = torch.log_softmax(logits, -1).gather(-1, x[:, t : t + 1].long()).squeeze(-1)
        slow += torch.where(x[:, t] != PAD, lp, 0.0)
    torch.testing.assert_close(fast, slow)


def test_word_dropout_replaces_tokens_by_unk_in_training_only():
    ids = (PAD, BOS, UNK)
    x = torch.tensor([[BOS, 4, 5, 6, EOS, PAD, PAD]] * 2000)
    assert torch.equal(_word_dropout(x, 0.5, ids, training=False), x)
    all_unk = _word_dropout(x, 1.0, ids, training=True)
    assert (all_unk[:, 1:5] == UNK).all() and (all_unk[:, 0] == BOS).all()
    assert (all_unk[:, 5:] == PAD).all()
    rate = (_word_dropout(x, 0.3, ids, training=True)[:, 1:5] == UNK).float().mean()
    assert abs(rate - 0.3) < 0.02
    net = _decoder(word_dropout=1.0)
    context = torch.randn(2, 3)
    a = torch.tensor([[BOS, 4, 5]] * 2)
    b = torch.tensor([[BOS, 5, 4]] * 2)
    assert torch.equal(net(context, a), net(context, b))  # training: the inputs are all <unk>
    net.eval()
    assert not torch.equal(net(context, a), net(context, b))


def test_generation_ends_every_row_with_eos_and_greedy_is_deterministic():
    tok = Tokenizer.fit(CORPUS, "char")
    model = build(
        kind="seqvae",
        arch="gru",
        event_shape=[16],
        hidden=[16],
        embed_dim=8,
        latent_dim=2,
        vocab=tok.vocab,
    )
    x = model.sample(20)
    model.check(x)  # ids in range and one <eos> in every row
    assert ((x == EOS).sum(1) == 1).all()
    z = torch.randn(5, 2)
    assert torch.equal(model.decode(z).mean, model.decode(z).mean)
    with pytest.raises(ValueError, match="arch gru"):
        build(kind="seqvae", arch="mlp", event_shape=[16], vocab=tok.vocab)
    with pytest.raises(ValueError, match="vocabulary"):
        build(kind="seqvae", arch="gru", event_shape=[16])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    corpus = tmp_path_factory.mktemp("text") / "corpus.txt"
    corpus.write_text("\n".join(CORPUS * 8))
    out = tmp_path_factory.mktemp("seq") / "run"
    argv = ["train", "--dataset", f"text:{corpus}", "--model", "seqvae", "--arch", "gru"]
    argv += ["--hidden", "32", "--latent-dim", "4", "--epochs", "2", "--batch-size", "8"]
    assert main([*argv, "--word-dropout", "0.3", "--no-images", "--out", str(out)]) == 0
    return out


def test_cli_prints_sentences(run, capsys):
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "5"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 5
    argv = ["interpolate", str(run), "--sentences", "Resolved.", "We know't.", "--steps", "4"]
    assert main(argv) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4
    assert main(["evaluate", str(run), "--iw-samples", "5", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["nll_per_token"] == pytest.approx(result["nll"] / result["tokens_per_example"])
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data_info"]["vocab"][:4] == list(SPECIALS)  # the vocabulary is saved with the run
