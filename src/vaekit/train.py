"""The training loop, readable top to bottom; its setup (data, model, objective, optimizer,
resume) is ``run.setup``.

Batches are sliced from the training split with a seeded permutation per epoch; each step prepares
the batch (e.g. dynamic binarization), computes the objective, backpropagates, skips non-finite
steps, clips, and steps Adam with a scheduled learning rate. At epoch ends: test ELBO, metrics,
TensorBoard, checkpoint. After the last epoch, with ``train.report_iw_samples`` = K > 0, one
final IWAE evaluation (K importance samples) of the test split is appended to metrics.jsonl.
Side effects live here and in ``checkpoint``; the model and the objective are pure.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from . import images
from .checkpoint import acquire_run_lock, run_write_error, save_checkpoint
from .config import Config
from .data import Dataset
from .devices import autocast
from .distributed import all_gather_rows, all_sum, average_gradients, micro_seed
from .evaluation import evaluate
from .objectives import ObjectiveResult
from .report import write_report
from .run import Run, setup

__all__ = ["train", "NonFiniteError", "lr_at"]


class NonFiniteError(RuntimeError):
    """Too many consecutive steps with a non-finite loss or gradient."""


def lr_at(step: int, total: int, cfg) -> float:
    """Learning rate at optimizer step ``step`` of ``total`` (constant, cosine or exponential)."""
    t = min(step / max(total, 1), 1.0)
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if cfg.lr_schedule == "cosine":
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * t))
    if cfg.lr_schedule == "exponential":
        return cfg.lr * (cfg.lr_final / cfg.lr) ** t
    raise ValueError(f"unknown lr_schedule {cfg.lr_schedule!r}; constant, cosine or exponential")


def _check_diverged(model, row: dict) -> None:
    """NonFiniteError if an epoch left non-finite weights or a non-finite test ELBO (weights
    so large that the model's outputs overflow), e.g. after too large a learning rate."""
    weights_ok = all(bool(torch.isfinite(p).all()) for p in model.parameters())
    if not weights_ok or not math.isfinite(row.get("test_elbo", 0.0)):
        what = "the weights are" if not weights_ok else "the test ELBO is"
        raise NonFiniteError(
            f"training diverged: after epoch {row['epoch']} (step {row['step']}) {what} not "
            "finite; lower the learning rate (the last good checkpoint, if any, is kept)"
        )


def _nonfinite_term(res) -> str:
    """Name the first non-finite term of an objective result, for the error message."""
    for name in ("log_px_z", "kl", "bound"):
        if not torch.isfinite(getattr(res, name)).all():
            return "reconstruction log p(x|z)" if name == "log_px_z" else name
    return "gradient"


def train(
    cfg: Config | None,
    out: str | Path,
    *,
    resume: bool = False,
    data_dir=None,
    log=print,
    dataset: Dataset | None = None,
) -> Path:
    """Train a VAE and write a run directory at ``out``; with ``resume=True`` continue it.

    Returns the run directory. Stops early (with a checkpoint) at ``train.max_steps``, at
    ``train.time_limit`` minutes, or on SIGINT/SIGTERM; ``resume`` then continues exactly. One
    process at a time trains a run directory (``RUN/.lock``); another gets a ``CheckpointError``,
    as does a write that fails (disk full, read-only directory): the last checkpoint stays intact
    for ``resume``. Steps with a non-finite loss or gradient are skipped and counted
    (``nonfinite_steps`` in metrics.jsonl); ``train.max_nonfinite`` in a row raise
    ``NonFiniteError``.
    """
    out = Path(out)
    if int(os.environ.get("RANK", "0")) > 0:  # another data-parallel process: rank 0 writes
        run = setup(cfg, out, resume=resume, data_dir=data_dir, dataset=dataset, log=log)
        try:
            return _loop(run, resume=resume, log=_quiet)
        finally:
            run.world.close()
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
    with acquire_run_lock(out):  # released on return, on an exception, or when the process dies
        run = setup(cfg, out, resume=resume, data_dir=data_dir, dataset=dataset, log=log)
        try:
            return _loop(run, resume=resume, log=log)
        except OSError as e:  # disk full or read-only outside a checkpoint: one clear error
            error = run_write_error(out, e)
            if error is None:
                raise
            raise error from e
        finally:
            run.world.close()


def _quiet(*args) -> None:
    pass


def _loop(run: Run, *, resume: bool, log) -> Path:
    """The epochs of ``run``, checkpointing into ``run.out``; the TensorBoard writer and the
    signal handlers last as long as the loop, however it ends."""
    from torch.utils.tensorboard import SummaryWriter

    writer = _NoWriter()
    if run.world.main:  # only rank 0 writes
        writer = SummaryWriter(str(run.out / "tb"), purge_step=run.step if resume else None)
    stop = _StopFlag()
    try:
        return _epochs(run, log, writer, stop)
    finally:
        stop.restore()
        with contextlib.suppress(OSError):  # closed already, or the disk is full
            writer.close()


def _epochs(run: Run, log, writer, stop: _StopFlag) -> Path:
    """The loop proper (see ``_loop``)."""
    cfg, tc, out = run.cfg, run.cfg.train, run.out
    model, objective, optimizer, ds, gen = run.model, run.objective, run.optimizer, run.ds, run.gen
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model_params = list(model.parameters())  # gradient clipping: the model's, not a baseline's
    total_steps = run.n_batches * tc.epochs
    epoch, step, batch_in_epoch, perm = run.epoch, run.step, run.batch_in_epoch, run.perm
    device, scaler, world = run.device, run.scaler, run.world
    gather = partial(all_gather_rows, world=world)  # the step's codes of every process

    t_start = time.monotonic()
    step_seconds = 0.0
    nonfinite_run, nonfinite_total, grad_skipped = 0, run.nonfinite, run.grad_skipped
    running = [*model.running_buffers(), *objective.buffers()]  # restored after a skipped step
    saved = [b.clone() for b in running]
    state = {"epoch": epoch, "step": step, "batch_in_epoch": batch_in_epoch}
    last_checkpoint = time.monotonic()

    def checkpoint(perm_now) -> None:
        nonlocal last_checkpoint
        if not world.main:
            world.barrier()  # rank 0 writes; the others wait until the checkpoint is complete
            return
        tensors = {"rng.torch": torch.get_rng_state(), "rng.data": gen.get_state()}
        if device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
        if perm_now is not None:
            tensors["data.perm"] = perm_now
        tensors.update({f"objective.{k}": v for k, v in objective.state_dict().items()})
        extra = {"aux": run.aux_optimizer} if run.aux_optimizer is not None else None
        trainer = dict(state, nonfinite=nonfinite_total, grad_skipped=grad_skipped)
        save_checkpoint(out, cfg, model, optimizer, trainer, tensors, extra)
        last_checkpoint = time.monotonic()
        world.barrier()

    # ---- the loop ------------------------------------------------------------------------------
    while epoch < tc.epochs:
        model.train()
        if perm is None:
            perm = torch.randperm(len(ds.train), generator=gen)
        sums = {"loss": 0.0, "bound": 0.0, "recon": 0.0, "kl": 0.0}  # + a penalty's terms
        counted = 0
        bar = tqdm(
            range(batch_in_epoch, run.n_batches),
            desc=f"epoch {epoch + 1}/{tc.epochs}",
            disable=None,
            leave=False,
            file=sys.stderr,
        )
        for b in bar:
            t_step = time.perf_counter()
            idx = perm[b * tc.batch_size : (b + 1) * tc.batch_size]
            lr = lr_at(step, total_steps, tc)
            for group in optimizer.param_groups:
                group["lr"] = lr
            for p in params:  # optimizer.zero_grad(set_to_none=True) without its profiler scope
                p.grad = None
            for keep, live in zip(saved, running, strict=True):
                keep.copy_(live)
            res, loss_value, metrics = _gradients(run, idx, step)  # this process's share
            if world.size > 1:  # mean gradients and loss: every rank then decides alike
                average_gradients(params, world)
                loss_value = float(all_sum(torch.tensor([loss_value]), world)) / world.size
            if scaler is not None:
                scaler.unscale_(optimizer)
            grad_norm = _clip_gradients(model_params, tc.clip_norm)  # one float, no tensors
            if tc.grad_skip and math.isfinite(grad_norm) and grad_norm > tc.grad_skip:
                grad_skipped += 1  # a gradient spike: no update (as in NVAE / VDVAE)
            elif not (math.isfinite(loss_value) and math.isfinite(grad_norm)):
                nonfinite_run += 1
                nonfinite_total += 1
                for keep, live in zip(saved, running, strict=True):  # no running statistic
                    live.copy_(keep)  # (a VQ-VAE's codebook, a fit) keeps a non-finite batch
                if nonfinite_run >= tc.max_nonfinite:
                    raise NonFiniteError(
                        f"{nonfinite_run} consecutive steps had a non-finite "
                        f"{_nonfinite_term(res)} (epoch {epoch + 1}, step {step}); "
                        "lower the learning rate or check the data"
                    )
            else:
                nonfinite_run = 0
                if scaler is None:
                    optimizer.step()
                else:
                    scaler.step(optimizer)
                model.after_step()
                if world.size > 1:  # running statistics (a baseline's mean, a code fit) agree
                    _average_buffers([model, objective], world)
                m = dict(metrics or res.metrics(loss_value))
                # the objective's own step (FactorVAE's discriminator) on the next batch
                m.update(objective.after_step(model, _batch(run, perm, b + 1), run.aux_optimizer,
                                              gather=gather))  # fmt: skip
                for key, value in m.items():
                    sums[key] = sums.get(key, 0.0) + value
                counted += 1
            if scaler is not None:
                scaler.update()  # float16: the loss scale follows overflows
            step += 1
            step_seconds += time.perf_counter() - t_step
            batch_in_epoch = b + 1
            state.update(step=step, batch_in_epoch=batch_in_epoch)
            if step % 50 == 0:
                bar.set_postfix(elbo=f"{sums['bound'] / max(counted, 1):.2f}")
                writer.add_scalar("train/loss", loss_value, step)
            if _should_stop(tc, step, t_start, stop, world):
                bar.close()
                checkpoint(perm)
                writer.close()
                log(f"stopped at epoch {epoch + 1}, step {step}; continue with --resume {out}")
                return out
            if batch_in_epoch < run.n_batches and _checkpoint_due(tc, step, last_checkpoint):
                checkpoint(perm)  # mid-epoch: the permutation and position resume exactly
        bar.close()

        # ---- end of epoch: evaluate, log, checkpoint ------------------------------------------
        epoch += 1
        perm, batch_in_epoch = None, 0
        state.update(epoch=epoch, batch_in_epoch=0)
        row = {
            "epoch": epoch,
            "step": step,
            "lr": lr,
            "kl_weight": objective.kl_weight(step),
            "time_s": round(time.monotonic() - t_start, 2),
            "step_time_s": round(step_seconds, 2),  # time in optimizer steps alone
            "nonfinite_steps": nonfinite_total,
            "grad_skipped_steps": grad_skipped,
        }
        totals = all_sum(torch.tensor([*sums.values(), counted], dtype=torch.float64), world)
        n_counted = max(float(totals[-1]), 1.0)
        row.update({f"train_{k}": float(v) / n_counted for k, v in zip(sums, totals, strict=False)})
        if epoch % tc.eval_every == 0 or epoch == tc.epochs:
            row.update(_test_metrics(run))
        _check_diverged(model, row)  # before the checkpoint: never save diverged weights
        if world.main:
            _log_epoch(out, writer, row, model if tc.images else None, run.x_test, ds.test_labels)
            log(_summary(row, tc.epochs))
        if epoch % tc.checkpoint_every == 0 or epoch == tc.epochs:
            checkpoint(None)

    if tc.report_iw_samples and world.main:
        _final_iwae(run, step, epoch, writer, log)
    if tc.images and world.main:
        images.write_run_pictures(model, run.x_test, out, labels=ds.test_labels)
        try:  # the report is a convenience: its failure must never lose the trained run
            factors = None if ds.factors is None else ds.factors[1]
            path = write_report(
                out, model, run.x_test, ds.test_labels, factors=factors,
                factor_names=ds.factor_names,
            )  # fmt: skip
            log(f"report: {path}")
        except Exception as e:
            log(f"report not written ({type(e).__name__}: {e}); try `vaekit report {out}`")
    writer.close()
    return out


def _gradients(
    run: Run, idx: torch.Tensor, step: int
) -> tuple[ObjectiveResult, float, dict | None]:
    """Forward and backward of this process's micro-batches of the global batch ``idx``; returns
    the last result, the mean loss and (several micro-batches) their mean metrics. One process
    with one micro-batch draws from the run's generators as ever; otherwise micro-batch m draws
    from generators seeded by (seed, step, m)."""
    tc, world, device = run.cfg.train, run.world, run.device
    amp = autocast(device, tc.precision)
    labels = run.ds.train_labels

    def backward(x, y) -> ObjectiveResult:
        with amp:
            res = run.objective(run.model, x.to(device), y, step=step)
        loss = res.loss / per_rank
        (loss if run.scaler is None else run.scaler.scale(loss)).backward()
        return res

    per_rank = tc.micro_batches // world.size
    if per_rank == 1 and world.size == 1:
        y = None if labels is None else labels[idx].to(device)  # conditional models
        res = backward(run.prep(run.ds.train[idx], run.gen), y)
        return res, float(res.loss.detach()), None
    size = len(idx) // tc.micro_batches
    rows = []
    for m in range(world.rank * per_rank, (world.rank + 1) * per_rank):
        part = idx[m * size : (m + 1) * size]
        seed = micro_seed(tc.seed, step, m)
        y = None if labels is None else labels[part].to(device)
        x = run.prep(run.ds.train[part], torch.Generator().manual_seed(seed))
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            res = backward(x, y)
        rows.append(res.metrics())
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return res, mean["loss"], mean


def _average_buffers(modules: list[torch.nn.Module], world) -> None:
    """Average every floating-point buffer over the processes (they then agree exactly)."""
    for module in modules:
        for b in module.buffers():
            if b.is_floating_point():
                b.copy_(all_sum(b, world) / world.size)


def _batch(run: Run, perm, b: int):
    """``() -> (x, y)``: batch ``b`` (mod the epoch's batches) of the permutation, prepared with
    the data generator; a function, so that only objectives that need it draw it."""

    def get():
        bs = run.cfg.train.batch_size
        start = (b % run.n_batches) * bs
        idx = perm[start : start + bs]
        y = None if run.ds.train_labels is None else run.ds.train_labels[idx].to(run.device)
        return run.prep(run.ds.train[idx], run.gen).to(run.device), y

    return get


def _test_metrics(run: Run) -> dict:
    """Test ELBO terms of the epoch's model (IWAE K=0: the bound only), for metrics.jsonl.
    With several processes each scores its own slice (no padded duplicates) and the sums are
    all-reduced."""
    world, n = run.world, len(run.x_test)
    lo, hi = n * world.rank // world.size, n * (world.rank + 1) // world.size
    labels = run.ds.test_labels
    ev = evaluate(
        run.model,
        run.x_test[lo:hi],
        k=0,
        batch_size=1000,
        seed=run.cfg.data.eval_seed,
        labels=None if labels is None else labels[lo:hi],
        check=False,  # run.setup checked the test split
    )
    if world.size > 1:
        ev = _gather_evaluation(ev, hi - lo, n, world)
    names = {"elbo": "test_elbo", "recon": "test_recon", "kl": "test_kl",
             "active_units": "active_units", "kl_per_dim": "kl_per_dim", "psnr": "test_psnr",
             "bits_per_code": "test_bits_per_code", "codes_used": "codes_used"}  # fmt: skip
    row = {new: ev[old] for old, new in names.items() if old in ev}  # no bound: recon only
    if "kl_per_layer" in ev:  # hierarchical models
        row["test_kl_per_layer"] = ev["kl_per_layer"]
    return row


def _final_iwae(run: Run, step: int, epoch: int, writer, log) -> None:
    """The trained model's test NLL = −IWAE_K (K = ``train.report_iw_samples``) ± standard error
    and bits/dim, appended to metrics.jsonl as a row with ``"final": true``."""
    k = run.cfg.train.report_iw_samples
    if not run.model.has_bound:
        log(f"train.report_iw_samples={k} ignored: a {run.cfg.model.kind} model has no bound")
        return
    ev = evaluate(
        run.model,
        run.x_test,
        k=k,
        seed=run.cfg.data.eval_seed,
        labels=run.ds.test_labels,
        check=False,
    )
    row = {"final": True, "epoch": epoch, "step": step, "iw_samples": k, "test_n": ev["n"]}
    row.update({f"test_{key}": ev[key] for key in ("nll", "nll_stderr", "bpd")})
    with open(run.out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    writer.add_scalar("test/nll", ev["nll"], step)
    log(f"test NLL (IWAE K={k}) {ev['nll']:.3f} ± {ev['nll_stderr']:.3f} nats, {ev['bpd']:.4f} bpd")


class _Single:
    """A one-process world (for the local half of a collective decision)."""

    size = 1


class _NoWriter:
    """TensorBoard's writer on processes that write nothing."""

    def add_scalar(self, *args, **kwargs) -> None:
        pass

    add_image = add_scalar
    flush = close = add_scalar


class _StopFlag:
    """Set by SIGINT/SIGTERM so that the loop checkpoints and returns instead of dying."""

    def __init__(self):
        self.set = False
        self._previous = {}
        try:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handler)
        except ValueError:  # not in the main thread
            pass

    def restore(self) -> None:
        """Put back the handlers there were before (the loop is over)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handler(self, signum, frame):
        if self.set:  # a second signal: give up at once
            raise KeyboardInterrupt
        self.set = True


def _clip_gradients(params: list[torch.Tensor], max_norm: float) -> float:
    """Total gradient norm of ``params``; gradients are rescaled to ``max_norm`` only when it is
    exceeded (0 = never). Non-finite norms are returned unchanged for the caller to skip."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    # per-tensor norms in one foreach kernel, then their norm (get_total_norm without its
    # per-call grouping by device and dtype: a third of this function's time on an MLP)
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    value = float(norm)
    if max_norm and math.isfinite(value) and value > max_norm:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
    return value


def _gather_evaluation(ev: dict, n_local: int, n: int, world) -> dict:
    """Means over all processes' slices from each process's means (weighted by slice size)."""
    keys = [k for k in ("elbo", "recon", "kl") if k in ev]  # a model without a bound: recon
    dims = ev.get("kl_per_dim", [])
    local = torch.tensor([ev[k] * n_local for k in keys] + [v * n_local for v in dims])
    total = all_sum(local.double(), world) / n
    out = dict(zip(keys, total[: len(keys)].tolist(), strict=True))
    if dims:
        kl = total[len(keys) :]
        out["kl_per_dim"] = [round(float(v), 5) for v in kl]
        out["active_units"] = int((kl > 0.01).sum())
    return out


def _should_stop(tc, step: int, t_start: float, stop: _StopFlag, world) -> bool:
    """Stop at max_steps, at the time limit, or on a signal; with several processes, all stop
    when one must (one all-reduce of a flag)."""
    if world.size > 1:
        local = _should_stop(tc, step, t_start, stop, _Single)
        return bool(all_sum(torch.tensor([float(local)]), world) > 0)
    if stop.set:
        return True
    if tc.max_steps is not None and step >= tc.max_steps:
        return True
    return tc.time_limit is not None and time.monotonic() - t_start >= 60.0 * tc.time_limit


def _checkpoint_due(tc, step: int, last: float) -> bool:
    """A mid-epoch checkpoint every ``checkpoint_every_steps`` steps / ``checkpoint_minutes``."""
    if tc.checkpoint_every_steps and step % tc.checkpoint_every_steps == 0:
        return True
    return bool(tc.checkpoint_minutes) and time.monotonic() - last >= 60.0 * tc.checkpoint_minutes


def _log_epoch(out: Path, writer, row: dict, model, x_test, y_test=None) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    for key, value in row.items():
        if isinstance(value, (int, float)) and key not in ("epoch", "step"):
            writer.add_scalar(key.replace("_", "/", 1), value, row["step"])
    if model is not None and images.is_image(model.event_shape):
        writer.add_image(
            "samples", images.grid(images.samples(model, 64)), row["step"], dataformats="HWC"
        )
        writer.add_image(
            "reconstructions",
            images.grid(
                images.reconstructions(model, x_test[:32], None if y_test is None else y_test[:32])
            ),
            row["step"],
            dataformats="HWC",
        )
    writer.flush()


def _summary(row: dict, epochs: int) -> str:
    s = f"epoch {row['epoch']:>3}/{epochs}  train elbo {row['train_bound']:9.3f}"
    if "test_elbo" in row:
        s += f"  test elbo {row['test_elbo']:9.3f} (recon {row['test_recon']:.2f}, kl "
        s += f"{row['test_kl']:.2f}, {row['active_units']} active)"
    elif "test_recon" in row:  # a model without a bound (autoencoder, VQ-VAE)
        s = f"epoch {row['epoch']:>3}/{epochs}  train recon {row['train_recon']:9.3f}"
        s += f"  test recon {row['test_recon']:9.3f}"
        if "test_psnr" in row:
            s += f" (PSNR {row['test_psnr']:.2f} dB, {row['test_bits_per_code']:.3f} bits/code)"
    return s + f"  [{row['time_s']:.0f}s]"
