"""``vaekit disentangle RUN``: disentanglement metrics of a run trained on a factor dataset
(``shapes``), and one traversal grid per factor.

Codes are posterior means E_q[z|x]. With a dataset that renders new observations
(``Dataset.factor_source``) the metrics are ``disentangle.evaluate_codes`` (MIG, FactorVAE score,
DCI, SAP; fresh uniformly drawn factors); otherwise MIG, DCI and SAP of the run's own train/test
codes and stored factors (``evaluate_stored``). The mutual information I(z_j; v_k) (nats, 20
bins) of the test split's codes ranks the latent dimensions for each factor; the grid
``traverse-<factor>.png`` varies the ``--top`` highest-ranked dimensions (rows) from −3 to 3
(columns) in the code of test item 0. Everything is written to ``RUN/disentangle/`` and the JSON
printed is also ``RUN/disentangle/metrics.json``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from .. import images
from ..checkpoint import load_run
from ..data import DataPrep, load_dataset
from ..disentangle import dims_by_factor, evaluate_codes, evaluate_stored, mutual_info_matrix
from ..latent import encode
from ..report import traversal_pictures
from .options import positive_int

__all__ = ["register", "measure", "code_encoder"]


def code_encoder(model, batch_size: int = 512):
    """``observations (N, ...) uint8 numpy → posterior means (N, D) numpy`` for the metrics:
    raw observations prepared as the run's test split is (fixed seed)."""
    cfg = model.run_config
    prep = DataPrep(model.likelihood, cfg.data.binarize)

    def run(obs: np.ndarray) -> np.ndarray:
        x = prep.fixed(torch.from_numpy(np.ascontiguousarray(obs)), cfg.data.eval_seed)
        return encode(model, x, batch_size=batch_size).numpy()

    return run


def measure(
    run: str | Path,
    *,
    n: int = 10_000,
    n_test: int = 5_000,
    votes: int | None = None,
    eval_votes: int | None = None,
    seed: int = 0,
    top: int = 3,
    steps: int = 9,
    data_dir=None,
    pictures: bool = True,
) -> dict:
    """The metrics of ``run`` (see the module doc) as a JSON-ready dict; writes the traversal
    grids and ``metrics.json`` under ``RUN/disentangle/`` (``pictures=False``: the JSON only)."""
    torch.set_num_threads(1)
    run = Path(run)
    model = load_run(run)
    cfg = model.run_config
    ds = load_dataset(
        cfg.data.dataset, data_dir, train_limit=cfg.data.train_limit, test_limit=cfg.data.test_limit
    )
    if ds.factors is None:
        raise ValueError(
            f"the run's dataset {cfg.data.dataset!r} has no ground-truth factors: train on a "
            "factor dataset such as shapes"
        )
    names = ds.factor_names or tuple(f"factor{k}" for k in range(ds.factors[0].shape[1]))
    enc = code_encoder(model)
    t0 = time.perf_counter()
    if ds.factor_source is not None:
        result: dict = evaluate_codes(
            enc, ds.factor_source, n, n_test, seed, n_votes=votes, n_eval_votes=eval_votes
        )
        result["protocol"] = (
            f"evaluate_codes: {n} train / {n_test} test codes of fresh factors, FactorVAE "
            f"score on {votes or n} / {eval_votes or n_test} votes of 64, seed {seed}"
        )
    else:
        f_train, f_test = (f.numpy() for f in ds.factors)
        result = evaluate_stored(
            enc(ds.train[:n].numpy()), f_train[:n], enc(ds.test[:n_test].numpy()), f_test[:n_test]
        )
        result["protocol"] = f"stored factors: the first {n} train / {n_test} test rows"
    result["seconds"] = round(time.perf_counter() - t0, 2)
    z_test = enc(ds.test[:n_test].numpy())
    f_test = ds.factors[1][:n_test].numpy()
    mi = mutual_info_matrix(z_test, f_test)  # (D, K) nats
    ranked = dims_by_factor(mi)
    varying = [k for k in range(f_test.shape[1]) if len(np.unique(f_test[:, k])) > 1]
    result["factors"] = [names[k] for k in varying]
    result["mutual_info"] = {names[k]: [round(float(v), 4) for v in mi[:, k]] for k in varying}
    result["dims_by_factor"] = {names[k]: ranked[k][:top].tolist() for k in varying}
    folder = run / "disentangle"
    folder.mkdir(exist_ok=True)
    if pictures and images.is_image(model.event_shape):
        x0 = DataPrep(model.likelihood, cfg.data.binarize).fixed(ds.test[:1], cfg.data.eval_seed)
        z0 = encode(model, x0)[0]
        values = torch.linspace(-3, 3, steps)
        result["pictures"] = {}
        for k in varying:
            dims = ranked[k][: min(top, model.latent_dim)].tolist()
            pics = images._to_unit(model, traversal_pictures(model, z0, dims, values))
            path = folder / f"traverse-{names[k]}.png"
            images.save_png(str(path), images.grid(pics, nrow=steps))
            result["pictures"][names[k]] = str(path)
    (folder / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_disentangle(args) -> int:
    result = measure(
        args.run,
        n=args.n,
        n_test=args.n_test,
        votes=args.votes,
        eval_votes=args.eval_votes,
        seed=args.seed,
        top=args.top,
        steps=args.steps,
        data_dir=args.data_dir,
    )
    print(json.dumps(result))
    return 0


def register(sub) -> None:
    d = sub.add_parser(
        "disentangle", help="MIG, FactorVAE score, DCI, SAP and traversals per factor"
    )
    d.add_argument("run")
    d.add_argument("--n", type=positive_int, default=10_000, help="training codes (10000)")
    d.add_argument("--n-test", type=positive_int, default=5_000, help="test codes (5000)")
    d.add_argument("--votes", type=positive_int, help="FactorVAE-score votes (default --n)")
    d.add_argument("--eval-votes", type=positive_int, help="its evaluation votes (--n-test)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--top", type=positive_int, default=3, help="dimensions per factor grid (3)")
    d.add_argument("--steps", type=positive_int, default=9, help="values from −3 to 3 (9)")
    d.set_defaults(func=cmd_disentangle)
