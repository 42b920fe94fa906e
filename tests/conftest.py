import os
from pathlib import Path

import pytest
import torch

# Tests read the shared real data; CI sets VAEKIT_DATA, this default serves a plain `pytest`.
os.environ.setdefault("VAEKIT_DATA", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
