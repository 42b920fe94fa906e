"""Crash safety of run directories: SIGKILL between any two file operations of a checkpoint,
write errors (disk full, read-only) in the middle of one, and one trainer per run directory.

The kill tests train a tiny MLP on the digits set in forked children of this process (modules
already imported: about 0.3 s per child instead of 8 s for a fresh interpreter), SIGKILL them
right after the N-th file operation of a checkpoint (``checkpoint.file_op_hook``) or at a random
moment, resume to the end and compare the final weights with an uninterrupted run's, bitwise.
One test does the same through a real ``python -m vaekit`` and ``VAEKIT_TEST_KILL_AFTER_WRITE``.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from fault_runs import TRAIN

from vaekit import checkpoint, cli
from vaekit.checkpoint import (
    CheckpointError,
    CheckpointWarning,
    acquire_run_lock,
    latest_checkpoint,
    load_run,
    load_state,
    save_checkpoint,
)
from vaekit.config import DataInfo, load_config
from vaekit.data import load_dataset
from vaekit.models import build_model
from vaekit.objectives import elbo

SRC = Path(__file__).resolve().parents[1] / "src"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _child(argv: list[str], log: Path, kill_after: int | None = None, ops: Path | None = None):
    """Run ``vaekit argv`` in a forked child; return its pid (stdout/stderr go to ``log``)."""
    pid = os.fork()
    if pid:
        return pid
    code = 70
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(fd, "w", buffering=1)  # noqa: SIM115 (pytest replaced both)
        checkpoint._ops_done = 0
        done: list[list[str]] = []
        if kill_after is not None or ops is not None:

            def hook(kind: str, path: Path) -> None:
                done.append([kind, str(path)])
                if len(done) == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)

            checkpoint.file_op_hook = hook
        code = cli.main(argv)
        if ops is not None:
            ops.write_text(json.dumps(done))
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


def _wait(pid: int, kill_at: float | None = None) -> int:
    """Exit code of child ``pid``, -9 if SIGKILLed; ``kill_at``: SIGKILL it after that many s."""
    if kill_at is not None:
        deadline = time.monotonic() + kill_at
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:  # it ended by itself before the kill
                return os.waitstatus_to_exitcode(status)
            time.sleep(0.002)
        os.kill(pid, signal.SIGKILL)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def _run(argv: list[str], log: Path, **kw) -> int:
    return _wait(_child(argv, log, **kw))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run: (final model sha256, its file operations, seconds it took)."""
    torch.use_deterministic_algorithms(torch.are_deterministic_algorithms_enabled())  # imports
    importlib.import_module("torch.utils.tensorboard")  # imported here, not in every child

    load_dataset("digits")
    root = tmp_path_factory.mktemp("reference")
    run, ops = root / "run", root / "ops.json"
    t0 = time.monotonic()
    assert _run([*TRAIN, "--out", str(run)], root / "log", ops=ops) == 0, (root / "log").read_text()
    return _sha(run / "model.safetensors"), json.loads(ops.read_text()), time.monotonic() - t0


def _checkpoint_ops(ops: list) -> list[list[list[str]]]:
    """The operations of each checkpoint write (each begins with creating its folder)."""
    starts = [i for i, (kind, _) in enumerate(ops) if kind == "mkdir"] + [len(ops)]
    return [ops[a:b] for a, b in zip(starts, starts[1:], strict=False)]


def _resume_to_end(run: Path, log: Path, expected_sha: str) -> None:
    code = _run(["train", "--resume", str(run)], log)
    assert code == 0, log.read_text()
    assert _sha(run / "model.safetensors") == expected_sha
    assert load_run(run) is not None  # the top level verifies
    names = sorted(p.name for p in (run / "ckpt").iterdir())
    assert len(names) == 2 and names[1] == "LATEST", names  # one folder, no leftovers
    assert (run / "ckpt/LATEST").read_text().strip() == names[0]


def test_one_checkpoint_write_is_a_known_sequence_of_file_operations(reference):
    ops = reference[1]
    per_ckpt = _checkpoint_ops(ops)
    assert len(per_ckpt) == 3  # epochs 1, 2, 3
    kinds = [kind for kind, _ in per_ckpt[1]]
    assert kinds == ["mkdir", *["write"] * 5, "rename", "write", "switch"] + [
        "write",
        "rename",
    ] * 3 + ["delete"]
    assert [k for k, _ in per_ckpt[0]] == kinds[:-1]  # the first has nothing to delete
    assert per_ckpt[1][8][1].endswith("ckpt/LATEST")


def _kill_points(ops: list, every: bool) -> list[tuple[int, int, str]]:
    """(global op index, checkpoint number, 'kind path') where the kill tests stop the trainer."""
    per_ckpt, points, first = _checkpoint_ops(ops), [], 0
    for c, block in enumerate(per_ckpt, start=1):
        for j, (kind, path) in enumerate(block, start=1):
            chosen = every or c == 2 or (c == 1 and j in (6, 7, 9)) or (c == 3 and j in (9, 11))
            if chosen:
                points.append((first + j, c, f"{kind} {Path(path).name}"))
        first += len(block)
    return points


def _kill_and_resume(reference, tmp_path: Path, every: bool) -> None:
    expected, ops, _ = reference
    for n, c, what in _kill_points(ops, every):
        run, log = tmp_path / f"kill-{n}", tmp_path / f"kill-{n}.log"
        assert _run([*TRAIN, "--out", str(run)], log, kill_after=n) == -9, (what, log.read_text())
        if latest_checkpoint(run) is None:  # killed before the first checkpoint was complete
            assert c == 1, what
            code = _run(["train", "--resume", str(run)], log)
            assert code == 2 and "no complete checkpoint" in log.read_text(), what
            continue
        if (run / "manifest.json").exists() and c > 1:  # the top level always loads
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CheckpointWarning)
                load_run(run)
        _resume_to_end(run, log, expected)


def test_sigkill_at_each_file_operation_of_a_checkpoint_then_resume_is_exact(reference, tmp_path):
    """Every operation of the second checkpoint, and the critical ones of the first and last."""
    _kill_and_resume(reference, tmp_path, every=False)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("VAEKIT_SLOW_KILLS"), reason="set VAEKIT_SLOW_KILLS=1")
def test_sigkill_at_every_file_operation_of_every_checkpoint(reference, tmp_path):
    _kill_and_resume(reference, tmp_path, every=True)


def _continue(run: Path, log: Path, kill_at: float | None = None) -> int:
    """Resume ``run``, or start it afresh if it has no complete checkpoint yet."""
    resume = latest_checkpoint(run) is not None
    argv = ["train", "--resume", str(run)] if resume else [*TRAIN, "--out", str(run), "--force"]
    return _wait(_child(argv, log), kill_at)


def test_sigkill_at_random_moments_then_resume_is_exact(reference, tmp_path):
    """Kill a run at a random instant, kill its resumption at another, then resume to the end."""
    expected = reference[0]
    t0 = time.monotonic()
    assert _run([*TRAIN, "--out", str(tmp_path / "timed")], tmp_path / "timed.log") == 0
    duration = min(time.monotonic() - t0, reference[2])  # ~0.4 s setup, then 3 checkpoints
    rng = random.Random(1234)
    kills = 0
    for trial in range(4):
        run, log = tmp_path / f"run-{trial}", tmp_path / f"run-{trial}.log"
        for when in ((0.05, 0.4), (0.1, 0.9)):  # the first kill early: it lands under any load
            code = _continue(run, log, kill_at=rng.uniform(*when) * duration)
            assert code in (0, -9), log.read_text()
            kills += code == -9
        assert _continue(run, log) == 0, log.read_text()
        assert _sha(run / "model.safetensors") == expected
    assert kills >= 2  # kills landed (a run that outpaces its timer just finishes: also fine)


def test_a_real_cli_process_killed_at_the_pointer_switch_resumes_exactly(reference, tmp_path):
    """``python -m vaekit`` with VAEKIT_TEST_KILL_AFTER_WRITE: killed right after the second
    checkpoint's LATEST switch, before the top-level copies were replaced."""
    expected, ops, _ = reference
    switch = [i for i, (kind, _) in enumerate(ops, start=1) if kind == "switch"][1]
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC), checkpoint.KILL_ENV: str(switch)}
    cmd = [sys.executable, "-m", "vaekit", *TRAIN, "--out", str(run)]
    killed = subprocess.run(cmd, env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert (run / "ckpt/LATEST").read_text().strip() == "000002-step-000000030"  # epoch 2
    assert json.loads((run / "manifest.json").read_text())["checkpoint"] == "000001-step-000000015"
    _resume_to_end(run, tmp_path / "resume.log", expected)


def test_step_checkpoints_change_nothing_and_resume_exactly_mid_epoch(reference, tmp_path):
    """``train.checkpoint_every_steps=7``: killed at the LATEST switch of the 5th checkpoint
    (step 28, mid-epoch 2), resumed: the same weights as an uninterrupted epoch-only run."""
    argv = [*TRAIN, "--set", "train.checkpoint_every_steps=7", "--out"]
    ops = tmp_path / "ops.json"
    assert _run([*argv, str(tmp_path / "full")], tmp_path / "full.log", ops=ops) == 0
    assert _sha(tmp_path / "full/model.safetensors") == reference[0]
    done = json.loads(ops.read_text())
    steps = [Path(p).name[-6:] for kind, p in done if kind == "rename" and "step-" in p]
    assert steps[:5] == ["000007", "000014", "000015", "000021", "000028"]
    switch = [i for i, (kind, _) in enumerate(done, start=1) if kind == "switch"]
    run = tmp_path / "run"
    assert _run([*argv, str(run)], tmp_path / "run.log", kill_after=switch[4]) == -9
    assert latest_checkpoint(run).name.endswith("step-000000028")
    _resume_to_end(run, tmp_path / "run.log", reference[0])


# ---- recovery without a subprocess --------------------------------------------------------------


def _tiny(seed: int = 0):
    cfg = load_config(None, {"data.dataset": "digits", "model.hidden": [8], "model.latent_dim": 2})
    cfg.data_info = DataInfo(event_shape=[1, 8, 8], levels=256)
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.data_info)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    elbo(model, (torch.rand(4, 1, 8, 8) > 0.5).float()).loss.backward()
    opt.step()
    return cfg, model, opt


def _save(run: Path, cfg, model, opt, step: int) -> None:
    trainer = {"epoch": step // 10, "step": step, "batch_in_epoch": 0}
    save_checkpoint(run, cfg, model, opt, trainer, {"rng.torch": torch.get_rng_state()})


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _assert_weights(model, expected: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def _resumed(run: Path, cfg) -> tuple[dict, torch.nn.Module]:
    model = build_model(cfg.model, cfg.data_info)
    trainer, _ = load_state(run, model, torch.optim.Adam(model.parameters(), lr=1e-3))
    return trainer, model


def test_a_corrupt_or_missing_latest_pointer_falls_back_to_the_newest_complete_folder(tmp_path):
    import shutil

    cfg, model, opt = _tiny()
    _save(tmp_path, cfg, model, opt, 10)
    first = _weights(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    second = _weights(model)
    # a complete second folder whose commit (the LATEST switch) never happened
    checkpoint.file_op_hook = lambda kind, path: _raise_on(kind == "rename")
    try:
        with pytest.raises(_Stop):
            _save(tmp_path, cfg, model, opt, 20)
    finally:
        checkpoint.file_op_hook = None
    newest = tmp_path / "ckpt/000002-step-000000020"
    shutil.copytree(tmp_path, tmp_path / "copy", ignore=shutil.ignore_patterns("copy"))
    (tmp_path / "ckpt/LATEST").write_text("garbage\n")
    with pytest.warns(CheckpointWarning, match="newest complete checkpoint .*000002-step"):
        trainer, resumed = _resumed(tmp_path, cfg)
    assert trainer["step"] == 20
    _assert_weights(resumed, second)
    # the newest folder corrupt too: the next one, and the top level is repaired from it
    (newest / "model.safetensors").write_bytes((newest / "model.safetensors").read_bytes()[:-8])
    (tmp_path / "model.safetensors").write_bytes(b"tampered")
    with pytest.warns(CheckpointWarning, match="000002-step.* incomplete or corrupt"):
        trainer, resumed = _resumed(tmp_path, cfg)
    assert trainer["step"] == 10
    _assert_weights(resumed, first)
    _assert_weights(load_run(tmp_path), first)
    # with a valid LATEST the uncommitted folder is ignored, and deleted on resume
    copy = tmp_path / "copy"
    assert (copy / "ckpt" / newest.name).is_dir() and _resumed(copy, cfg)[0]["step"] == 10
    assert sorted(p.name for p in (copy / "ckpt").iterdir()) == ["000001-step-000000010", "LATEST"]


class _Stop(Exception):
    pass


def _raise_on(condition: bool) -> None:
    if condition:
        raise _Stop


def test_a_top_level_left_half_replaced_loads_the_committed_checkpoint_tampering_does_not(
    tmp_path,
):
    cfg, model, opt = _tiny()
    _save(tmp_path, cfg, model, opt, 10)
    with torch.no_grad():
        next(model.parameters()).mul_(2.0)
    second = _weights(model)
    # stop right after the new top-level model.safetensors replaced the old one
    checkpoint.file_op_hook = lambda kind, path: _raise_on(
        kind == "rename" and path.name == "model.safetensors" and path.parent == tmp_path
    )
    try:
        with pytest.raises(_Stop):
            _save(tmp_path, cfg, model, opt, 20)
    finally:
        checkpoint.file_op_hook = None
    with pytest.warns(CheckpointWarning, match="interrupted while replacing"):
        _assert_weights(load_run(tmp_path), second)
    _resumed(tmp_path, cfg)  # resuming repairs the top level
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _assert_weights(load_run(tmp_path), second)
    data = bytearray((tmp_path / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tmp_path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        load_run(tmp_path)  # the top level names the current checkpoint: tampered, refused


def test_a_run_in_the_layout_before_ckpt_loads_resumes_and_is_upgraded(tmp_path):
    cfg, model, opt = _tiny()
    _save(tmp_path, cfg, model, opt, 10)
    (folder,) = [p for p in (tmp_path / "ckpt").iterdir() if p.name != "LATEST"]
    for rel in ("config.json", "model.safetensors", "manifest.json", "state"):
        os.replace(folder / rel, tmp_path / rel)  # the old layout: everything at the top level
    shutil.rmtree(tmp_path / "ckpt")
    old = _weights(model)
    _assert_weights(load_run(tmp_path), old)
    trainer, resumed = _resumed(tmp_path, cfg)
    assert trainer["step"] == 10
    _assert_weights(resumed, old)
    _save(tmp_path, cfg, resumed, opt, 20)
    assert not (tmp_path / "state").exists()
    assert latest_checkpoint(tmp_path).name == "000001-step-000000020"
    _assert_weights(load_run(tmp_path), old)


@pytest.mark.parametrize(
    "error", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only-filesystem"]
)
def test_a_write_error_mid_checkpoint_is_clear_and_keeps_the_previous_one(
    tmp_path, monkeypatch, error
):
    cfg, model, opt = _tiny()
    _save(tmp_path, cfg, model, opt, 10)
    first = _weights(model)
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    second = _weights(model)
    real = checkpoint._write_bytes
    writes = 9  # 5 in the folder, ckpt/LATEST, 3 top-level copies
    for fail_at in range(1, writes + 1):
        run = tmp_path / f"fail-{fail_at}"
        shutil.copytree(tmp_path, run, ignore=shutil.ignore_patterns("fail-*"))
        calls = []

        def failing(path: Path, data: bytes, fail_at=fail_at, calls=calls) -> None:
            calls.append(path)
            if len(calls) == fail_at:
                raise OSError(error, os.strerror(error), str(path))
            real(path, data)

        monkeypatch.setattr(checkpoint, "_write_bytes", failing)
        with pytest.raises(CheckpointError) as info:
            _save(run, cfg, model, opt, 20)
        monkeypatch.setattr(checkpoint, "_write_bytes", real)
        message = str(info.value)
        assert ("disk is full" if error == errno.ENOSPC else "read-only") in message
        assert str(calls[-1]) in message  # names the file
        committed = fail_at > 6
        if committed:
            assert "was saved" in message and "--resume" in message
        else:
            assert "000001-step-000000010 is intact" in message
        assert not list(run.rglob(".tmp-*")) and not list(run.rglob("*.tmp"))  # no leftovers
        trainer, resumed = _resumed(run, cfg)
        assert trainer["step"] == (20 if committed else 10)
        _assert_weights(resumed, second if committed else first)
        _assert_weights(load_run(run), second if committed else first)
    assert len(calls) == writes  # every write was reached


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only directory")
def test_a_read_only_run_directory_is_refused_clearly(tmp_path):
    cfg, model, opt = _tiny()
    _save(tmp_path, cfg, model, opt, 10)
    os.chmod(tmp_path / "ckpt", 0o555)
    try:
        with pytest.raises(CheckpointError, match="not writable|read-only"):
            _save(tmp_path, cfg, model, opt, 20)
    finally:
        os.chmod(tmp_path / "ckpt", 0o755)
    assert _resumed(tmp_path, cfg)[0]["step"] == 10


# ---- the run-directory lock ---------------------------------------------------------------------


def test_a_second_process_cannot_lock_a_run_until_the_first_dies(tmp_path):
    code = (
        "import sys, time\n"
        "from vaekit.checkpoint import acquire_run_lock\n"
        "acquire_run_lock(sys.argv[1])\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointError, match=rf"in use: .*pid {holder.pid}"):
            acquire_run_lock(tmp_path)
    finally:
        holder.kill()  # SIGKILL: the kernel releases the flock
        holder.wait()
    with acquire_run_lock(tmp_path), acquire_run_lock(tmp_path):  # re-entrant in one process
        pid = os.fork()
        if pid == 0:  # another process still cannot take it
            try:
                acquire_run_lock(tmp_path)
                os._exit(1)
            except CheckpointError:
                os._exit(0)
        assert _wait(pid) == 0
    with acquire_run_lock(tmp_path):  # released when the last holder left
        pass


def test_vaekit_train_refuses_a_run_directory_another_process_is_training(tmp_path):
    run, log = tmp_path / "run", tmp_path / "log"
    run.mkdir()
    read, write = os.pipe()
    holder = os.fork()
    if holder == 0:
        try:
            acquire_run_lock(run)
            os.write(write, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    try:
        assert os.read(read, 1) == b"x"
        assert _run([*TRAIN, "--out", str(run), "--force"], log) == 2
        assert "is in use" in log.read_text()
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
