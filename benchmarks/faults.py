"""Reliability figures for the README: bad inputs, injected faults, the explorer under load.

    python benchmarks/faults.py [--kills 10] [--load-seconds 10] [--bad-inputs DIR]

1. Bad inputs: ``bad_input_cases()`` of ``tests/bad_inputs.py`` (``--bad-inputs``: the folder
   holding it), (class, description, callable → outcome) each run once; outcomes counted per
   class, an exception counted as a crash. Without the module the JSON says so.
2. Faults injected into a tiny digits run (``tests/fault_runs.py``): disk full (ENOSPC) at each of
   the 27 file writes of its three checkpoints, a read-only directory (EACCES, EROFS) at each
   write of the second, metrics.jsonl unwritable, NaN losses (a few, then too many in a row), and
   SIGKILL at random moments (``tests/test_checkpoint_crash.py``'s forked children), each
   followed by ``--resume``. Survived: exit 2 with one line and no traceback (or a kill), no
   partial files left, the resumed run finishing with weights bit-identical to an uninterrupted
   run's.
3. The explorer under load: ``benchmarks/explore_load.py`` for ``--load-seconds``.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fault_runs as fr  # noqa: E402
import torch  # noqa: E402


def bad_inputs(folder: Path) -> dict:
    """Outcomes of ``bad_input_cases()`` per class, or a note when the module is absent."""
    if not (folder / "bad_inputs.py").exists():
        return {"available": False, "note": f"{folder}/bad_inputs.py is absent: not run"}
    sys.path.insert(0, str(folder))
    cases = importlib.import_module("bad_inputs").bad_input_cases()
    by_class: dict[str, Counter] = {}
    crashes = []
    for name, description, case in cases:
        try:
            outcome = str(case())
        except Exception as e:  # the case itself failed: a crash, reported
            outcome = f"crash: {type(e).__name__}"
            crashes.append(f"{name}: {description}: {type(e).__name__}: {e}"[:300])
        by_class.setdefault(name, Counter())[outcome] += 1
    return {
        "available": True,
        "cases": sum(sum(c.values()) for c in by_class.values()),
        "classes": len(by_class),
        "by_class": {k: dict(v) for k, v in sorted(by_class.items())},
        "crashes": crashes,
    }


def _survived(seen: dict, reference: str) -> bool:
    """A write fault ended as it should (see the module doc)."""
    clean = seen["exit"] == 2 and not seen["traceback"] and "\n" not in seen["message"]
    return clean and not seen["leftovers"] and seen.get("model_sha") == reference


def write_faults(root: Path, reference: str) -> dict:
    """Disk full at every checkpoint write; read-only at every write of the second checkpoint."""
    out = {}
    n = fr.EPOCHS * fr.WRITES_PER_CHECKPOINT
    second = range(fr.WRITES_PER_CHECKPOINT + 1, 2 * fr.WRITES_PER_CHECKPOINT + 1)
    plans = {
        "disk_full": [(k, errno.ENOSPC) for k in range(1, n + 1)],
        "read_only": [(k, e) for e in (errno.EACCES, errno.EROFS) for k in second],
    }
    for name, plan in plans.items():
        seen = [fr.write_fault(root / f"{name}-{k}-{e}", k, e) for k, e in plan]
        failed = [s for s in seen if not _survived(s, reference)]
        out[name] = {
            "injected": len(seen),
            "survived": len(seen) - len(failed),
            "exit_2_one_line": sum(s["exit"] == 2 and "\n" not in s["message"] for s in seen),
            "resumed_bit_exact": sum(s.get("model_sha") == reference for s in seen),
            # none only when the first checkpoint's folder was not complete: started again
            "resumable_checkpoint_left": sum(s["kept_step"] is not None for s in seen),
            "failures": [{k: s[k] for k in ("fail_at", "file", "exit", "message")} for s in failed],
            "example_message": seen[len(seen) // 2]["message"],
        }
    return out


def nan_steps(root: Path) -> dict:
    """A few NaN losses (skipped and counted), then too many in a row (NonFiniteError)."""
    run = root / "nan"
    with fr.nan_losses({3, 4, 20}):
        code, _ = fr.run_cli([*fr.TRAIN, "--out", str(run)])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    finite = code == 0 and fr.finite_state(fr.load_run(run))
    with fr.nan_losses(set(range(5, 1000))):
        argv = [*fr.TRAIN, "--out", str(root / "nan-stop"), "--set", "train.max_nonfinite=5"]
        stop_code, stop_err = fr.run_cli(argv)
    return {
        "nan_steps_injected": 3,
        "skipped_and_counted": rows[-1]["nonfinite_steps"] if rows else None,
        "finished_with_finite_weights": finite,
        "too_many_in_a_row": {"exit": stop_code, "message": stop_err.strip()},
    }


def sigkills(root: Path, reference: str, trials: int, seed: int = 1234) -> dict:
    """SIGKILL a run at a random instant (and its resumption at another), then resume to the end;
    the helpers of tests/test_checkpoint_crash.py (forked children)."""
    crash = importlib.import_module("test_checkpoint_crash")
    t0 = time.monotonic()
    assert crash._run([*crash.TRAIN, "--out", str(root / "timed")], root / "timed.log") == 0
    duration = time.monotonic() - t0
    rng = random.Random(seed)
    kills = exact = 0
    for trial in range(trials):
        run, log = root / f"kill-{trial}", root / f"kill-{trial}.log"
        for when in ((0.05, 0.4), (0.1, 0.9)):
            kills += crash._continue(run, log, kill_at=rng.uniform(*when) * duration) == -9
        code = crash._continue(run, log)
        exact += code == 0 and fr.sha(run / "model.safetensors") == reference
    return {
        "runs": trials,
        "kills_landed": kills,
        "resumed_bit_exact": exact,
        "run_seconds": round(duration, 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=10, help="runs killed at random moments")
    p.add_argument("--load-seconds", type=float, default=10.0)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--bad-inputs", type=Path, default=ROOT / "tests")
    args = p.parse_args()
    torch.set_num_threads(1)
    t0 = time.monotonic()
    result: dict = {"benchmark": "faults", "bad_inputs": bad_inputs(args.bad_inputs)}
    with tempfile.TemporaryDirectory(prefix="vaekit-faults-") as tmp:
        root = Path(tmp)
        assert fr.run_cli([*fr.TRAIN, "--out", str(root / "reference")])[0] == 0
        reference = fr.sha(root / "reference/model.safetensors")
        result["faults"] = write_faults(root, reference)
        result["faults"]["non_finite"] = nan_steps(root)
        result["faults"]["sigkill"] = sigkills(root, reference, args.kills)
    from explore_load import run_load

    result["load"] = run_load(clients=args.clients, duration=args.load_seconds)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["load_average_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
