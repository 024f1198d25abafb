"""Sub-networks: configurations, cost models, export and batch-norm recalibration."""

from .config import Config, full, smallest, use, validate_config

__all__ = ["Config", "full", "smallest", "use", "validate_config"]
