"""Reliability figures for the README: bad inputs, injected faults, the explorer under load.

    python benchmarks/faults.py [--kills 10] [--load-seconds 10] [--bad-inputs DIR]

1. Bad inputs: ``bad_input_cases()`` of ``tests/bad_inputs.py`` (``--bad-inputs``: the folder
   holding it), one case per bad-input class, each run once; outcomes (refused, accepted,
   crashed; a case running over 60 s is a crash) counted per group of classes. Without the
   module the JSON says so.
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
import signal
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

CASE_LIMIT_S = 60  # a bad-input case still running after this is a crash (a hang)


class _CaseTimeout(BaseException):  # not an Exception: a case's own handlers let it through
    pass


def _alarm(signum, frame) -> None:
    raise _CaseTimeout


def bad_inputs(folder: Path) -> dict:
    """How each bad-input case of ``bad_input_cases()`` ended (``refused``, the right outcome;
    ``accepted``; ``crashed``), counted per group of classes (``idx.truncated`` → ``idx``), and
    every case that was not refused; a note when the module is absent."""
    if not (folder / "bad_inputs.py").exists():
        return {"available": False, "note": f"{folder}/bad_inputs.py is absent: not run"}
    sys.path.insert(0, str(folder))
    signal.signal(signal.SIGALRM, _alarm)
    cases = importlib.import_module("bad_inputs").bad_input_cases()
    groups: dict[str, Counter] = {}
    wrong = []
    slow = []
    for name, description, case in cases:
        t0 = time.monotonic()
        signal.alarm(CASE_LIMIT_S)
        try:
            outcome = str(case())
        except _CaseTimeout:
            outcome = f"crashed: no answer within {CASE_LIMIT_S} s"
        except Exception as e:  # the runner itself failed: a crash too
            outcome = f"crashed: {type(e).__name__}: {e}"
        finally:
            signal.alarm(0)
        slow.append((round(time.monotonic() - t0, 1), name))
        kind = outcome.split(":", 1)[0]
        groups.setdefault(name.split(".", 1)[0], Counter())[kind] += 1
        if kind != "refused":
            wrong.append({"class": name, "input": description, "outcome": outcome[:300]})
    total = Counter(kind for g in groups.values() for kind in g.elements())
    return {
        "available": True,
        "classes": len(cases),
        "slowest_s": dict((name, t) for t, name in sorted(slow, reverse=True)[:3]),
        "outcomes": dict(total),
        "by_group": {k: dict(v) for k, v in sorted(groups.items())},
        "not_refused": wrong,
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
