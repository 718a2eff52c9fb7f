"""Model-agnostic training diagnostics (method-notes, "Conditioning diagnostic")."""

from .conditioning import hessian_condition_numbers, softmax_ce_hessian

__all__ = ["hessian_condition_numbers", "softmax_ce_hessian"]
