"""vaekit: variational autoencoders on PyTorch.

import vaekit
model = vaekit.load("runs/demo")          # a trained VAE (manifest-verified)
qz_x = model.encode(x)                     # q(z|x); qz_x.mean is the embedding
px_z = model.decode(qz_x.mean)             # p(x|z), a torch distribution
model.sample(16), model.elbo(x), model.log_likelihood(x, k=1000)
"""

from .checkpoint import CheckpointError, load_run
from .config import Config, load_config
from .data import load_dataset
from .distributions import SupportError
from .evaluation import evaluate
from .model import VAE, build_model
from .objectives import elbo, iwae
from .train import train

load = load_run

__all__ = [
    "VAE",
    "CheckpointError",
    "Config",
    "SupportError",
    "build_model",
    "elbo",
    "evaluate",
    "iwae",
    "load",
    "load_config",
    "load_dataset",
    "load_run",
    "train",
]
__version__ = "0.1.0"
