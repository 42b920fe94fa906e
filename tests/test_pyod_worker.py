"""benchmarks/pyod_worker.py's protocol (npz in, JSON out), against a stand-in ``pyod`` package.

The real PyOD lives only in the benchmark's own venv; this checks the worker's side of the bridge
fast: scores per detector, seeding, stdout kept clean of what detectors print, errors reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).resolve().parents[1] / "benchmarks" / "pyod_worker.py"

FAKE = {
    "torch.py": 'raise ImportError("stand-in: no torch")\n',  # shadows torch: a fast import
    "pyod/__init__.py": '__version__ = "0.0-fake"\n',
    "pyod/utils/__init__.py": "",
    "pyod/utils/utility.py": (
        "def standardizer(X, X_t):\n"
        "    m, s = X.mean(0), X.std(0)\n"
        "    return (X - m) / s, (X_t - m) / s\n"
    ),
    "pyod/models/__init__.py": "",
    "pyod/models/ecod.py": (
        "class ECOD:\n"
        "    def __init__(self, contamination=0.1, n_jobs=1):\n"
        "        pass\n"
        "    def fit(self, X):\n"
        "        print('chatter on stdout')\n"
        "        return self\n"
        "    def decision_function(self, X):\n"
        "        return (X ** 2).sum(1)\n"
    ),
    "pyod/models/iforest.py": (
        "class IForest:\n"
        "    def __init__(self, random_state=None, verbose=0):\n"
        "        self.random_state = random_state\n"
        "    def fit(self, X):\n"
        "        return self\n"
        "    def decision_function(self, X):\n"
        "        return X[:, 0] * float('nan')\n"
    ),
}


def test_worker_protocol(tmp_path):
    for rel, text in FAKE.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    rng = np.random.default_rng(0)
    x_train, x_test = rng.normal(size=(50, 3)), rng.normal(size=(20, 3))
    x_test[0] = 10.0
    np.savez(tmp_path / "split.npz", x_train=x_train, x_test=x_test)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    cmd = [sys.executable, str(WORKER), str(tmp_path / "split.npz"), "--seed", "3"]
    proc = subprocess.run(
        [*cmd, "--detectors", "ECOD,IForest"], capture_output=True, text=True, env=env, check=True
    )
    out = json.loads(proc.stdout)  # the detector's print went to stderr
    assert out["pyod"] == "0.0-fake" and out["torch"] is None
    ecod = out["detectors"]["ECOD"]
    assert ecod["params"] == {}
    assert len(ecod["scores"]) == 20 and np.argmax(ecod["scores"]) == 0
    assert ecod["seconds"] >= 0
    forest = out["detectors"]["IForest"]
    assert forest["params"] == {"random_state": 3, "verbose": 0}
    assert "scores" not in forest and "non-finite" in forest["error"]
    assert "chatter on stdout" in proc.stderr

    bad = subprocess.run([*cmd, "--detectors", "Nope"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "unknown detector" in bad.stderr
