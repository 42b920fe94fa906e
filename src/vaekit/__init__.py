"""vaekit: variational autoencoders on PyTorch.

import vaekit
model = vaekit.load("runs/demo")          # a trained VAE (manifest-verified)
qz_x = model.encode(x)                     # q(z|x); qz_x.mean is the embedding
px_z = model.decode(qz_x.mean)             # p(x|z), a torch distribution
model.sample(16)                           # x ~ p(x|z), z ~ p(z)
vaekit.elbo(model, x).bound                # (B,) nats; vaekit.log_likelihood(model, x, k=1000)
"""

from .checkpoint import CheckpointError, load_run
from .config import Config, ConfigError, DataInfo, load_config
from .data import DataFormatError, DataNotFoundError, load_dataset
from .distributions import SupportError
from .evaluation import evaluate, log_likelihood
from .models import VAE, build_model
from .objectives import elbo, iwae
from .train import NonFiniteError, train
from .version import __version__

load = load_run

__all__ = [
    "VAE",
    "CheckpointError",
    "Config",
    "ConfigError",
    "DataError",
    "DataFormatError",
    "DataInfo",
    "DataNotFoundError",
    "NonFiniteError",
    "SupportError",
    "build_model",
    "elbo",
    "evaluate",
    "iwae",
    "load",
    "load_config",
    "load_dataset",
    "load_run",
    "log_likelihood",
    "train",
    "__version__",
]
DataError = DataFormatError  # the typed exception for unusable data (see also DataNotFoundError)
