"""The layer interface and the row-gathering helpers shared by all layers."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from ...nnet3 import components as C

Avail = Callable[[np.ndarray], np.ndarray]
FLOAT = torch.float32


def float_tensor(arr) -> torch.Tensor:
    """A float32 copy of an array."""
    return torch.tensor(np.asarray(arr, dtype=np.float32))


# oneDNN's fp32 product beats F.linear's MKL sgemm by 1.1-1.7x on this project's AMD (AVX-512)
# machine once it has a few hundred rows (fewer: its fixed cost loses).  Its results differ
# from MKL's in the last bits, so it is used only where asked (onednn_products), without
# autograd: statistics and targets computed before (calibration, fine-tuning) stay the same.
_ONEDNN: bool | None = None          # whether torch's oneDNN linear works here (probed once)
_ONEDNN_MIN_ROWS = 256
_use_onednn = False


@contextmanager
def onednn_products() -> Iterator[None]:
    """Within this block, large products without autograd go through oneDNN."""
    global _use_onednn
    before, _use_onednn = _use_onednn, True
    try:
        yield
    finally:
        _use_onednn = before


def _onednn_linear_works() -> bool:
    if not (torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    x, w = torch.arange(6.0).reshape(2, 3), torch.ones(4, 3)
    try:
        return torch.equal(torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], ""),
                           F.linear(x, w))
    except RuntimeError:
        return False


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
           ) -> torch.Tensor:
    """x W^T (+ b) over the last dimension (see :func:`onednn_products`)."""
    global _ONEDNN
    if (_use_onednn and not torch.is_grad_enabled() and x.dtype == weight.dtype == FLOAT
            and x.numel() >= _ONEDNN_MIN_ROWS * x.shape[-1]):
        if _ONEDNN is None:
            _ONEDNN = _onednn_linear_works()
        if _ONEDNN:
            return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)


def rows_of(times: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Row of each wanted time in the sorted array ``times`` (-1 where absent)."""
    rows = np.searchsorted(times, wanted)
    rows = np.minimum(rows, max(len(times) - 1, 0))
    found = (times[rows] == wanted) if len(times) else np.zeros(wanted.shape, bool)
    return np.where(found, rows, -1)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[:, rows] along time, where row index T_in (= x.shape[1]) is a zero row."""
    if rows.numel() and int(rows.max()) >= x.shape[1]:
        x = torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1)
    return x.index_select(1, rows.reshape(-1)).reshape(x.shape[0], *rows.shape, *x.shape[2:])


def zero_padded(rows: np.ndarray, num_in: int) -> torch.Tensor:
    """Row indexes with -1 (absent) replaced by num_in, the zero row of gather_rows."""
    return torch.as_tensor(np.where(rows < 0, num_in, rows), dtype=torch.long)


class Layer(torch.nn.Module):
    """A component that maps frame t to frame t; subclasses define ``forward``.

    ``tokens`` maps the tensor attributes copied from the component to their Kaldi
    tokens (written back by :meth:`write_back`).
    """

    def __init__(self, comp: C.Component):
        super().__init__()
        self.comp = comp
        self.tokens: dict[str, str] = {}

    def _register(self, name: str, token: str) -> None:
        """A parameter (updatable components) or buffer initialised from ``token``."""
        value = float_tensor(self.comp[token])
        self.tokens[name] = token
        if self.comp.is_updatable:
            self.register_parameter(name, torch.nn.Parameter(value, requires_grad=False))
        else:
            self.register_buffer(name, value)

    @property
    def time_simple(self) -> bool:
        """True when output frame t depends on input frame t only."""
        return True

    @property
    def fixed_window(self) -> bool:
        """True when output frame t reads input frames t + k for a fixed set of k, all
        required (its value then does not depend on which other frames a chunk has)."""
        return self.time_simple

    def input_times(self, t: np.ndarray, avail: Avail) -> np.ndarray:
        """The input times used by the (computable) output times ``t``."""
        return t

    def index(self, t_out: np.ndarray, t_in: np.ndarray, avail: Avail):
        return None

    def forward(self, x: torch.Tensor, index=None) -> torch.Tensor:
        raise NotImplementedError

    def forward_inplace(self, x: torch.Tensor, index=None) -> torch.Tensor:
        """The same as ``forward``, free to overwrite ``x`` (no autograd, nobody else reads x)."""
        return self(x, index)

    def write_back(self) -> None:
        """Store the current parameter values in the Kaldi component."""
        for name, token in self.tokens.items():
            old = self.comp[token]
            new = getattr(self, name).detach().cpu().numpy().reshape(old.shape)
            self.comp.set(token, new.astype(old.dtype))
