"""Reference architectures built from nested layers."""

from .mlp import MLP

__all__ = ["MLP"]
