"""The paper's experiments as functions: the degradation problem (Fig. 6, Table 6) and the demo."""

from .degradation import run_degradation

__all__ = ["run_degradation"]
