"""The likelihood head: the one place that knows a data type.

A head turns decoder outputs into p(x|z) and declares everything else the package asks of a data
type: how many decoder outputs it needs per data element, which values it accepts (support), how
raw 8-bit data become values in that support, how those values feed an encoder, what a picture or
a text of them is, and the constant that converts its density to bits per dimension. Nothing
outside ``likelihoods`` branches on likelihood names.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from ..distributions import SupportError

__all__ = ["Likelihood", "SupportError", "check_finite"]


def check_finite(name: str, x: Tensor) -> None:
    """``SupportError`` when a float tensor holds NaN or inf (one pass over the data)."""
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise SupportError(f"{name} likelihood: data contain NaN or inf values")


class Likelihood(nn.Module):
    """Maps decoder outputs of shape ``(*batch, n_params, *network_shape)`` to p(x|z).

    Subclasses set ``name`` and ``n_params`` and implement ``dist`` and (beyond finiteness)
    ``check``. Class attributes:

    - ``n_params``: decoder outputs per data element;
    - ``binary``: the head needs binary data, so 8-bit data are binarized by default;
    - ``discrete``: ``log_prob`` is a log-probability mass (bits/dim need no constant);
    - ``is_text``: values are token rows (``texts`` decodes them).
    """

    name: str = ""
    n_params: int = 1
    binary: bool = False
    discrete: bool = False
    is_text: bool = False

    def __init__(self, event_shape: tuple[int, ...]):
        super().__init__()
        self.event_shape = tuple(event_shape)

    # ---- the distribution --------------------------------------------------------------------
    def dist(self, params: Tensor) -> Distribution:
        """p(x|z) from decoder outputs; batch shape ``params.shape[:-len(network_shape)-1]``."""
        raise NotImplementedError

    def forward(self, params: Tensor) -> Distribution:
        return self.dist(params)

    @property
    def network_shape(self) -> tuple[int, ...]:
        """Shape of the encoder's input row and of each decoder output map (the data's)."""
        return self.event_shape

    @property
    def nats_offset_per_dim(self) -> float:
        """Added to −log p(x)/D before converting to bits/dim: ``log 256`` for a density on
        dequantized 8-bit data, 0 for a probability mass (and for real-valued data)."""
        return 0.0

    # ---- data in the support -----------------------------------------------------------------
    def check(self, x: Tensor) -> None:
        """Raise ``SupportError`` if ``x`` is not finite or outside the support (every row)."""
        check_finite(self.name, x)

    def prepare(self, raw: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Raw uint8 (0..255) → float values in this likelihood's support."""
        return raw.float()

    def encoder_input(self, x: Tensor) -> Tensor:
        """Support values → floats of order one for a network."""
        return x

    # ---- what people see ---------------------------------------------------------------------
    def display(self, x: Tensor) -> Tensor:
        """Values → [0, 1] for pictures (images: the encoder scaling, clamped)."""
        return self.encoder_input(x).clamp(0, 1)

    def texts(self, x: Tensor) -> list[str]:
        """Token rows → sentences (text likelihoods only)."""
        raise TypeError(f"the {self.name} likelihood models no text")

    def units(self, x: Tensor) -> Tensor | None:
        """Scored units per example ``(N,)`` when they vary (tokens of a sentence), else None."""
        return None

    # ---- helpers -----------------------------------------------------------------------------
    def _event_dims(self) -> int:
        return len(self.event_shape)

    def _param(self, params: Tensor, i: int) -> Tensor:
        """The i-th parameter map of ``params`` shaped ``(*batch, n_params, *event_shape)``."""
        dim = -self._event_dims() - 1
        if self.n_params == 1:  # a view both ways (select's backward writes a zero-filled copy)
            return params.squeeze(dim)
        return params.select(dim, i)
