"""Deprecated location, kept for one release: the model spec, fit façade and model file format now
live in `bayes_nest.app.spec`, `bayes_nest.app.fitting` and `bayes_nest.app.model_file`.

Each name here is the very object of its new module; import it from there (or from the
package root, ``import bayes_nest as bn``).
"""

from __future__ import annotations

from .app.fitting import fit
from .app.model_file import CHECKPOINT_KIND, TrainedModel, load_model
from .app.spec import METHODS, MODELS, SEGMENTATION_MODELS, TASKS, ModelSpec, build_model
from .app.train import BNNN_DEFAULTS, FN3_DEFAULTS

__all__ = [
    "BNNN_DEFAULTS",
    "CHECKPOINT_KIND",
    "FN3_DEFAULTS",
    "METHODS",
    "MODELS",
    "ModelSpec",
    "SEGMENTATION_MODELS",
    "TASKS",
    "TrainedModel",
    "build_model",
    "fit",
    "load_model",
]
