"""Sub-networks: configurations, cost models, export and batch-norm recalibration."""

from .config import Config, full, smallest, use, validate_config
from .cost import COST_METRICS, CostModel, LayerCost, cost, costs, layer_costs, register_cost_rule
from .export import ExportError, export, register_exporter
from .latency import LatencyTable, measure_latency
from .recalibrate import recalibrate_batchnorm

__all__ = [
    "COST_METRICS",
    "Config",
    "CostModel",
    "ExportError",
    "LatencyTable",
    "LayerCost",
    "cost",
    "costs",
    "export",
    "full",
    "layer_costs",
    "measure_latency",
    "recalibrate_batchnorm",
    "register_cost_rule",
    "register_exporter",
    "smallest",
    "use",
    "validate_config",
]
