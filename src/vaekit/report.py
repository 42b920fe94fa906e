"""One self-contained HTML report of a run: curves, numbers, pictures, the latent space.

Every picture is a PNG embedded as a ``data:`` URI and the page has no scripts and no external
references, so the file opens offline, can be mailed, and shows the same thing years later.
Sections (HTML ids): ``summary``, ``curves``, ``evaluation``, ``samples``, ``reconstructions``,
``interpolations``, ``traversals``, ``latent-map``, and ``disentanglement`` when the run's data
have ground-truth factors (``FACTOR_SECTION``). Image sections say so when the data are not
images; the curves, numbers and latent map work for every data type.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from . import images
from .checkpoint import load_config_of
from .disentangle import dims_by_factor, mig_per_factor, mutual_info_matrix
from .latent import (
    decode_groups,
    dims_by_kl,
    encode,
    group_dims,
    latent_map,
    n_groups_of,
    restrict_dims,
    traversal,
)

__all__ = [
    "write_report",
    "SECTIONS",
    "png_data_uri",
    "figure_data_uri",
    "read_metrics",
    "map_figure",
    "traversal_pictures",
    "FACTOR_SECTION",
]

SECTIONS = (
    ("summary", "Run"),
    ("curves", "Training curves"),
    ("evaluation", "Evaluation"),
    ("samples", "Samples"),
    ("reconstructions", "Reconstructions"),
    ("interpolations", "Interpolations"),
    ("traversals", "Latent traversals"),
    ("latent-map", "Latent map"),
)
FACTOR_SECTION = ("disentanglement", "Disentanglement")  # only for data with known factors

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.2rem .6rem;
text-align:left;font-variant-numeric:tabular-nums} th{background:#f4f4f4}
img.px{image-rendering:pixelated} figure{display:inline-block;margin:.3rem 1rem .3rem 0}
figcaption{font-size:.85rem;color:#555} .note{color:#666;font-style:italic}
nav a{margin-right:.8rem}
"""


# ---- embedding helpers -------------------------------------------------------------------------


def png_data_uri(array: np.ndarray) -> str:
    """A uint8 image ``(H, W, 3)`` as a ``data:image/png;base64,...`` URI."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def figure_data_uri(fig) -> str:
    """A matplotlib ``Figure`` as an embedded PNG URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(uri: str, caption: str, scale: float = 1.0, width: int | None = None) -> str:
    style = f' style="width:{width * scale:.0f}px"' if width else ""
    return (
        f'<figure><img class="px" src="{uri}" alt="{html.escape(caption)}"{style}>'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def _grid_img(x: Tensor, nrow: int, caption: str) -> str:
    """A grid of ``(N, C, H, W)`` values in [0, 1], shown at least 2× for small images."""
    arr = images.grid(x, nrow=nrow)
    scale = max(1.0, min(3.0, 560 / arr.shape[1]))
    return _img(png_data_uri(arr), caption, scale, arr.shape[1])


def _table(rows: list[tuple[str, object]]) -> str:
    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{fmt(v)}</td></tr>" for k, v in rows)
    return f"<table>{body}</table>"


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def read_metrics(run: Path, *, final: bool = False) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl``, one JSON object per epoch ([] when absent); with
    ``final=True`` only the final evaluation rows (``"final": true``: report_iw_samples)."""
    path = Path(run) / "metrics.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if bool(r.get("final")) == final]


# ---- sections -----------------------------------------------------------------------------------


def _summary(run: Path, model, n: int) -> str:
    cfg = getattr(model, "run_config", None) or load_config_of(run)
    rows = [
        ("run", str(run)),
        ("dataset", f"{cfg.data.dataset} ({n} examples shown, event shape {model.event_shape})"),
        ("model", f"{cfg.model.arch}, latent_dim {cfg.model.latent_dim}, {cfg.model.likelihood}"),
        ("objective", f"{cfg.objective.name}, beta {cfg.objective.beta}"),
        ("training", f"{cfg.train.epochs} epochs, batch {cfg.train.batch_size}, lr {cfg.train.lr}"),
        ("written", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]
    return _table(rows)


def _curves(rows: list[dict]) -> str:
    if not rows:
        return _note("no metrics.jsonl in this run: no curves")
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in rows]
    fig = Figure(figsize=(11, 3))
    for ax, (title, train_key, test_key) in zip(
        fig.subplots(1, 3),
        [
            ("ELBO (nats, higher is better)", "train_bound", "test_elbo"),
            ("reconstruction E_q log p(x|z)", "train_recon", "test_recon"),
            ("KL(q(z|x) ‖ p(z))", "train_kl", "test_kl"),
        ],
        strict=True,
    ):
        for key, label in ((train_key, "train"), (test_key, "test")):
            pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="." if len(pts) < 30 else None, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    out = _img(figure_data_uri(fig), "per-example bounds by epoch")
    kl_rows = [r for r in rows if r.get("kl_per_dim")]
    if kl_rows:
        kl = np.array([r["kl_per_dim"] for r in kl_rows])  # (epochs, D)
        order = np.argsort(-kl[-1], kind="stable")
        fig = Figure(figsize=(11, 3))
        ax1, ax2 = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1]})
        im = ax1.imshow(
            kl[:, order].T,
            aspect="auto",
            origin="lower",
            cmap="viridis",
            extent=(kl_rows[0]["epoch"] - 0.5, kl_rows[-1]["epoch"] + 0.5, -0.5, kl.shape[1] - 0.5),
        )
        ax1.set_title("test KL per latent dimension (nats; dims sorted by final KL)", fontsize=10)
        ax1.set_xlabel("epoch")
        ax1.set_ylabel("dimension rank")
        fig.colorbar(im, ax=ax1)
        ax2.plot([r["epoch"] for r in kl_rows], [r["active_units"] for r in kl_rows], marker=".")
        ax2.set_title("active units (KL > 0.01 nats)", fontsize=10)
        ax2.set_xlabel("epoch")
        ax2.set_ylim(0, kl.shape[1] + 0.5)
        fig.tight_layout()
        out += _img(figure_data_uri(fig), "use of the latent dimensions over training")
    if len(epochs) == 1:
        out += _note("one epoch so far: the curves are single points")
    return out


def _evaluation(run: Path, rows: list[dict], extra: dict | None) -> str:
    parts = []
    if rows:
        last = rows[-1]
        keys = ("epoch", "step", "test_elbo", "test_recon", "test_kl", "active_units", "time_s")
        parts.append("<h3>last epoch</h3>" + _table([(k, last[k]) for k in keys if k in last]))
    for final in read_metrics(run, final=True)[-1:]:
        parts.append("<h3>end of training (IWAE)</h3>" + _table(list(final.items())))
    evals = sorted(Path(run).glob("eval-*.json"))
    if extra:
        evals = [("computed now", extra)] + evals
    for item in evals:
        name, res = item if isinstance(item, tuple) else (item.name, json.loads(item.read_text()))
        keys = ("elbo", "recon", "kl", "nll", "nll_stderr", "bpd", "active_units", "n", "k")
        parts.append(
            f"<h3>{html.escape(name)}</h3>" + _table([(k, res[k]) for k in keys if k in res])
        )
    if not parts:
        return _note("no evaluation yet: run `vaekit evaluate RUN`")
    return "".join(parts) + _note("nats per example; nll = −IWAE bound with K samples ± stderr")


SAMPLE_TEMPERATURES = (1.0, 0.8, 0.6)


@torch.no_grad()
def _samples(model) -> str:
    return "".join(
        _grid_img(
            images.samples(model, 64, temperature=t, seed=0), 8, f"64 samples, temperature {t}"
        )
        for t in SAMPLE_TEMPERATURES
    ) + _note("means E[x|z] of z from the prior with its scales × T (one layer: N(0, T² I))")


def _reconstructions(model, x: Tensor) -> str:
    return _grid_img(
        images.reconstructions(model, x[:32].float()),
        8,
        "inputs (odd rows) and E[x|z=μ(x)] (even rows)",
    )


def _interpolations(model, x: Tensor, labels: Tensor | None, n_top: int | None = None) -> str:
    pairs = _pairs(len(x), labels, 4)
    out = []
    for path in ("linear", "slerp"):
        rows = [images.interpolation(model, x[a], x[b], 10, path, n_top=n_top) for a, b in pairs]
        caption = f"{path} paths between the posterior means of items " + ", ".join(
            f"{a}→{b}" for a, b in pairs
        )
        if n_top is not None and n_top < model.n_groups:
            caption += f" (top {n_top} of {model.n_groups} groups; the rest: prior means)"
        out.append(_grid_img(torch.cat(rows), 10, caption))
    return "".join(out)


def _pairs(n: int, labels: Tensor | None, k: int) -> list[tuple[int, int]]:
    """Up to ``k`` pairs of items, of different labels when labels are known."""
    if n < 2:
        return []
    pairs, j = [], 1
    for a in range(n):
        if len(pairs) == k:
            break
        j = max(j, a + 1)
        while j < n and labels is not None and labels[j] == labels[a]:
            j += 1
        if j < n:
            pairs.append((a, j))
            j += 1
    return pairs


def traversal_pictures(
    model,
    z0: Tensor,
    dims,
    values: Tensor,
    *,
    n_top: int | None = None,
    x: Tensor | None = None,
    lower: str = "prior",
    temperature: float = 0.0,
) -> Tensor:
    """Decoded means of ``traversal(z0, dims, values)``: ``(K·V, *event_shape)``, rows = dims.
    Hierarchical models: ``n_top`` groups kept, the rest filled as ``latent.decode_groups`` says
    (``x``: the item ``(1, *event)`` whose code ``z0`` is)."""
    codes = traversal(z0, list(dims), values)  # (K, V, D)
    codes = codes.reshape(-1, z0.shape[0])
    return decode_groups(model, codes, n_top, x=x, lower=lower, temperature=temperature)


def _traversals(
    model, x: Tensor, z: Tensor, order: Tensor, kl: Tensor, n_top: int, lower: str
) -> str:
    order, kl = restrict_dims(order, kl, group_dims(model, n_top))
    k = min(8, len(order))
    values = torch.linspace(-3, 3, 9)
    pics = traversal_pictures(
        model, z[0], order[:k].tolist(), values, n_top=n_top, x=x[:1].float(), lower=lower
    )
    caption = (
        "rows: the most-used dimensions ("
        + ", ".join(
            f"z{int(d)}: {float(v):.2f} nats" for d, v in zip(order[:k], kl[:k], strict=True)
        )
        + "), set to −3 … 3 in the code of item 0"
    )
    if n_top < model.n_groups:
        caption += (
            f"; dimensions of the top {n_top} of {model.n_groups} groups, the groups below "
            + ("item 0's posterior means" if lower == "posterior" else "the prior means")
        )
    return _grid_img(images._to_unit(model, pics), len(values), caption)


def _disentanglement(run: Path, z: Tensor, factors: Tensor, names: tuple[str, ...] | None) -> str:
    """Metrics of ``vaekit disentangle`` (when run), the mutual information I(z_j; v_k) of the
    shown items' codes and factors (nats, 20 bins) with each factor's MIG, and the traversal
    grids that ``vaekit disentangle`` wrote."""
    from matplotlib.figure import Figure

    f = factors.numpy()
    names = tuple(names or (f"factor{k}" for k in range(f.shape[1])))
    varying = [k for k in range(f.shape[1]) if len(np.unique(f[:, k])) > 1]
    parts = []
    saved = Path(run) / "disentangle" / "metrics.json"
    if saved.exists():
        res = json.loads(saved.read_text())
        keys = ("mig", "factor_vae", "dci_disentanglement", "dci_completeness",
                "dci_informativeness", "sap")  # fmt: skip
        parts.append(
            "<h3>vaekit disentangle</h3>"
            + _table([(k, res[k]) for k in keys if k in res])
            + _note(res.get("protocol", ""))
        )
    else:
        parts.append(_note("run `vaekit disentangle RUN` for the FactorVAE score, DCI and SAP"))
    mi = mutual_info_matrix(z.numpy(), f)  # (D, K)
    gaps = mig_per_factor(z.numpy(), f)
    ranked = dims_by_factor(mi)
    rows = [
        (names[k], f"MIG {gaps[k]:.3f}; dims by I(z; v): "
         + ", ".join(f"z{j} {mi[j, k]:.2f}" for j in ranked[k][:3]))
        for k in varying
    ]  # fmt: skip
    parts.append(f"<h3>these {len(z)} items</h3>" + _table(rows))
    fig = Figure(figsize=(max(4, 0.5 * len(varying) + 2), max(3, 0.3 * mi.shape[0] + 1)))
    ax = fig.subplots()
    im = ax.imshow(mi[:, varying], aspect="auto", cmap="magma")
    ax.set_xticks(range(len(varying)), [names[k] for k in varying], fontsize=8, rotation=30)
    ax.set_ylabel("latent dimension")
    ax.set_title("I(z_j; v_k), nats", fontsize=10)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    parts.append(_img(figure_data_uri(fig), "mutual information of codes and factors"))
    for k in varying:
        png = Path(run) / "disentangle" / f"traverse-{names[k]}.png"
        if png.exists():
            arr = np.asarray(Image.open(png).convert("RGB"))
            parts.append(_img(png_data_uri(arr), f"{names[k]}: its top dimensions, −3 … 3"))
    return "".join(parts)


def map_figure(z: Tensor, labels: Tensor | None, method: str = "pca", ax=None):
    """A scatter plot of the 2-D ``latent_map`` of codes ``(N, D)`` coloured by label; returns
    the matplotlib ``Figure``."""
    from matplotlib.figure import Figure

    if ax is None:
        ax = Figure(figsize=(6, 5)).subplots()
    xy = latent_map(z, method)
    c = None if labels is None else labels.numpy()
    cmap = None if c is None else "tab10" if c.max() < 10 else "viridis"
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=c, cmap=cmap, s=6)
    if c is not None:
        ax.figure.colorbar(sc, ax=ax, label="label")
    ax.set_title(f"{method.upper()} of the posterior means ({len(z)} items)", fontsize=10)
    return ax.figure


def _latent_map(labels: Tensor | None, method: str, z: Tensor, order: Tensor, kl: Tensor) -> str:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    ax, ax_kl = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    if len(z) >= 3:
        map_figure(z, labels, method, ax)
    ax_kl.bar(range(len(kl)), kl.numpy())
    ax_kl.set_xticks(range(len(kl)), [str(int(d)) for d in order], fontsize=6, rotation=90)
    ax_kl.set_title("mean KL per dimension (nats), by use", fontsize=10)
    fig.tight_layout()
    caption = f"{method.upper()} map of {len(z)} posterior means (colour = label); dimension use"
    return _img(figure_data_uri(fig), caption)


# ---- the report --------------------------------------------------------------------------------


def write_report(
    run: str | Path,
    model,
    x: Tensor,
    labels: Tensor | None = None,
    *,
    out: str | Path | None = None,
    map_method: str = "pca",
    limit: int = 1000,
    evaluation: dict | None = None,
    factors: Tensor | None = None,
    factor_names: tuple[str, ...] | None = None,
    groups: str | int = "all",
    lower: str = "prior",
) -> Path:
    """Write ``RUN/report.html`` (or ``out``) for ``model`` on data ``x`` ``(N, *event_shape)`` (in
    the likelihood's support) with optional labels ``(N,)``; at most ``limit`` items are used.

    ``evaluation`` is an ``evaluation.evaluate`` result to show beside the run's saved ones;
    ``factors`` int64 ``(N, K)`` (the items' ground-truth factors, ``Dataset.factors``) add the
    ``disentanglement`` section. ``groups`` / ``lower``: what the traversals of a hierarchical
    model edit and how the groups below are filled (``latent.decode_groups``); interpolations run
    through all groups.
    """
    run = Path(run)
    out = Path(out) if out is not None else run / "report.html"
    if len(x) == 0:
        raise ValueError("the report needs at least one example")
    x = x[:limit]
    labels = None if labels is None else labels[: len(x)]
    factors = None if factors is None else factors[: len(x)]
    model.eval()
    n_top = n_groups_of(model, groups)
    rows = read_metrics(run)
    cache: dict[str, Tensor] = {}

    def codes() -> tuple[Tensor, Tensor, Tensor]:
        """Posterior means ``(N, D)``, dims by KL, their KL (computed once, on first use)."""
        if not cache:
            cache["z"] = encode(model, x)
            cache["order"], cache["kl"] = dims_by_kl(model, x)
        return cache["z"], cache["order"], cache["kl"]

    makers = {
        "summary": lambda: _summary(run, model, len(x)),
        "curves": lambda: _curves(rows),
        "evaluation": lambda: _evaluation(run, rows, evaluation),
        "latent-map": lambda: _latent_map(labels, map_method, *codes()),
    }
    sections = list(SECTIONS)
    if factors is not None:
        sections.append(FACTOR_SECTION)
        makers["disentanglement"] = lambda: _disentanglement(run, codes()[0], factors, factor_names)
    if images.is_image(model.event_shape):
        makers["samples"] = lambda: _samples(model)
        makers["reconstructions"] = lambda: _reconstructions(model, x)
        makers["interpolations"] = lambda: _interpolations(model, x, labels)
        makers["traversals"] = lambda: _traversals(model, x, *codes(), n_top, lower)
    no_pictures = _note(f"data of shape {model.event_shape} are not images: no pictures")
    body = dict.fromkeys((sid for sid, _ in sections), no_pictures)
    for sid, make in makers.items():
        try:  # a section that this model family cannot draw must not cost the others
            body[sid] = make()
        except Exception as e:
            body[sid] = _note(f"not available for this model: {type(e).__name__}: {e}")
    nav = "".join(f'<a href="#{sid}">{title}</a>' for sid, title in sections)
    html_sections = "".join(
        f'<section id="{sid}"><h2>{title}</h2>{body[sid]}</section>' for sid, title in sections
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>vaekit report: {html.escape(run.name)}</title><style>{_CSS}</style></head>"
        f"<body><h1>vaekit report: {html.escape(run.name)}</h1><nav>{nav}</nav>{html_sections}"
        "</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out
