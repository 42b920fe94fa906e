"""vaekit beside Pythae on ``shapes``: β-TCVAE (β = 6) and FactorVAE (γ = 35), same data,
networks, batch, epochs, learning rate; MIG of both and wall time per epoch.

Pythae is never a vaekit dependency: this script creates its own virtual environment
``.bench/pythae-venv`` (``pip install torch==2.13.0 pythae``; a ``--dry-run`` first refuses any
CUDA build of torch or NVIDIA package), and re-runs itself there as a worker that trains one
Pythae model and writes its codes. The vaekit side is ``benchmarks/variants_shapes.py``'s runs
of the same variants (run that first; its ``bench.json`` files are read here).

Protocol: the training images are ``variants_shapes.DATA``'s (the same seeded subset); the
networks are the same MLP, 4096 → 256 → 256 → (μ, log σ² or raw σ) of 10 / 10 → 256 → 256 →
4096 Bernoulli logits (Pythae: sigmoid + BCE, the same likelihood); Adam, lr 1e-3 constant,
batch 64, 4 epochs; the FactorVAE discriminator is 3 × 256 LeakyReLU(0.2) in both (Pythae's
default is 5 × 1000), Adam lr 1e-4, betas (0.5, 0.9) in vaekit and Pythae's default Adam betas.
Pythae's FactorVAE trains the VAE on half of each batch and permutes the codes of the other
half (its design); vaekit's on the whole batch and permutes the next batch's codes.
MIG (and DCI, SAP) on the codes (posterior means) of the very observations that vaekit's
``evaluate_codes(n=5000, n_test=2000, seed=0)`` draws, so the numbers compare one to one.
Wall time per epoch: training time only (no evaluation), 1 thread.

    nice -n 10 python benchmarks/pythae_shapes.py --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".bench" / "pythae-venv"
WORK = ROOT / ".bench" / "pythae"
EPOCHS, BATCH, LR, LATENT, HIDDEN = 4, 64, 1e-3, 10, 256
VARIANTS = {"beta-tcvae": {"beta": 6.0}, "factorvae": {"gamma": 35.0}}


# ---- the worker: runs inside the Pythae venv -------------------------------------------------


def worker(variant: str, seed: int, data: Path, out: Path) -> None:
    import torch
    from pythae.models import BetaTCVAE, BetaTCVAEConfig, FactorVAE, FactorVAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseDiscriminator, BaseEncoder
    from pythae.pipelines import TrainingPipeline
    from pythae.trainers import AdversarialTrainerConfig, BaseTrainerConfig
    from torch import nn

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    arrays = np.load(data, allow_pickle=False)
    x_train = torch.from_numpy(arrays["x_train"]).float() / 255.0  # (N, 1, 64, 64) in {0, 1}

    class Encoder(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Flatten(), nn.Linear(4096, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN),
                nn.ReLU(), nn.Linear(HIDDEN, 2 * LATENT),
            )  # fmt: skip

        def forward(self, x):
            mu, log_var = self.net(x).chunk(2, -1)
            return ModelOutput(embedding=mu, log_covariance=log_var)

    class Decoder(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(LATENT, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
                nn.Linear(HIDDEN, 4096),
            )  # fmt: skip

        def forward(self, z):
            return ModelOutput(reconstruction=torch.sigmoid(self.net(z)).view(-1, 1, 64, 64))

    class Discriminator(BaseDiscriminator):
        def __init__(self):
            super().__init__()
            layers, width = [], LATENT
            for _ in range(3):
                layers += [nn.Linear(width, HIDDEN), nn.LeakyReLU(0.2)]
                width = HIDDEN
            self.layers = nn.Sequential(*layers, nn.Linear(width, 2))

        def forward(self, z):
            return self.layers(z)

    common = dict(input_dim=(1, 64, 64), latent_dim=LATENT, reconstruction_loss="bce")
    folder = str(out.parent / f"pythae-{variant}-s{seed}")
    trainer = dict(output_dir=folder, num_epochs=EPOCHS, per_device_train_batch_size=BATCH,
                   seed=seed, no_cuda=True)  # fmt: skip
    if variant == "beta-tcvae":
        cfg = BetaTCVAEConfig(**common, alpha=1.0, beta=6.0, gamma=1.0, use_mss=True)
        model = BetaTCVAE(cfg, encoder=Encoder(), decoder=Decoder())
        training = BaseTrainerConfig(**trainer, learning_rate=LR)
    else:
        cfg = FactorVAEConfig(**common, gamma=35.0)
        model = FactorVAE(cfg, encoder=Encoder(), decoder=Decoder())
        model.set_discriminator(Discriminator())
        training = AdversarialTrainerConfig(
            **trainer, autoencoder_learning_rate=LR, discriminator_learning_rate=1e-4
        )
    pipeline = TrainingPipeline(training_config=training, model=model)
    t0 = time.perf_counter()
    pipeline(train_data=x_train)
    seconds = time.perf_counter() - t0
    model.eval()
    codes = {}
    with torch.no_grad():
        for split in ("eval_train", "eval_test"):
            obs = torch.from_numpy(arrays[split]).float() / 255.0
            codes[split] = torch.cat(
                [model.encoder(obs[i : i + 1000]).embedding for i in range(0, len(obs), 1000)]
            ).numpy()
    np.savez(out, **codes, seconds=np.array(seconds), epochs=np.array(EPOCHS))


# ---- the driver: runs in vaekit's environment -----------------------------------------------


def ensure_venv() -> Path:
    """``.bench/pythae-venv`` with torch==2.13.0 (CPU) and pythae; made once."""
    python = VENV / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import pythae"]).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "torch==2.13.0", "pythae"]
    plan = subprocess.run([*pip, "--dry-run"], capture_output=True, text=True, check=True).stdout
    would = [line for line in plan.splitlines() if line.startswith("Would install")]
    if not would or "torch-2.13.0+cpu" not in would[0] or "nvidia" in would[0].lower():
        raise SystemExit(f"refusing the Pythae install plan (not the CPU torch): {would}")
    subprocess.run([*pip, "-q"], check=True)
    return python


def write_data(path: Path, n: int, n_test: int) -> dict:
    """The training images of ``variants_shapes.DATA`` and the evaluation observations (and
    factors) that ``evaluate_codes(n, n_test, seed=0)`` draws."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import variants_shapes

    import vaekit

    ds = vaekit.load_dataset(variants_shapes.DATA)
    gen = ds.factor_source
    rng = np.random.default_rng(0)
    f_train, f_test = gen.sample_factors(n, rng), gen.sample_factors(n_test, rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=ds.train.numpy(), eval_train=gen.render(f_train),
             eval_test=gen.render(f_test))  # fmt: skip
    return {"f_train": f_train, "f_test": f_test, "data": variants_shapes.DATA}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--worker", nargs=4, metavar=("VARIANT", "SEED", "DATA", "OUT"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--vaekit-runs", default=str(ROOT / "runs" / "bench-variants"))
    args = p.parse_args(argv)
    if args.worker:
        variant, seed, data, out = args.worker
        worker(variant, int(seed), Path(data), Path(out))
        return 0
    from vaekit.disentangle import evaluate_stored

    python = ensure_venv()
    data = WORK / "data.npz"
    meta = write_data(data, 5000, 2000)
    runs = []
    for seed in args.seeds:
        for variant in VARIANTS:
            out = WORK / f"{variant}-s{seed}.npz"
            if not out.exists():
                cmd = [str(python), __file__, "--worker", variant, str(seed), str(data), str(out)]
                subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            r = np.load(out, allow_pickle=False)
            m = evaluate_stored(r["eval_train"], meta["f_train"], r["eval_test"], meta["f_test"])
            per_epoch = round(float(r["seconds"]) / int(r["epochs"]), 2)
            row = {"library": "pythae", "variant": variant, "seed": seed}
            row.update(seconds_per_epoch=per_epoch, **m)
            print(json.dumps(row), file=sys.stderr, flush=True)
            runs.append(row)
            mine = Path(args.vaekit_runs) / f"{variant}-s{seed}" / "bench.json"
            if mine.exists():
                b = json.loads(mine.read_text())
                keys = ("mig", "dci_disentanglement", "sap")
                mine_row = {"library": "vaekit", "variant": variant, "seed": seed}
                mine_row["seconds_per_epoch"] = b["step_seconds_per_epoch"]
                runs.append({**mine_row, **{k: b[k] for k in keys}})
    summary = {}
    for lib in ("vaekit", "pythae"):
        for variant in VARIANTS:
            rows = [r for r in runs if r["library"] == lib and r["variant"] == variant]
            if not rows:
                continue
            entry = {"seeds": len(rows)}
            for key in ("mig", "dci_disentanglement", "sap", "seconds_per_epoch"):
                v = [r[key] for r in rows]
                sd = statistics.stdev(v) if len(v) > 1 else float("nan")
                entry[key] = [round(statistics.fmean(v), 4), round(sd, 4)]
            summary[f"{lib}/{variant}"] = entry
    print(json.dumps({"data": meta["data"], "epochs": EPOCHS, "batch": BATCH, "lr": LR,
                      "runs": runs, "summary": summary}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
