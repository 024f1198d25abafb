"""The one training loop: :class:`TrainingLoop` trains any :class:`TrainingProgram` (FN3, BNNN)
in one process or data-parallel, with history, checkpoints, exact resume, non-finite checks and
mixed precision."""

from .history import History
from .loop import TrainingLoop
from .precision import Precision, grad_scaler
from .program import StepResult, TrainingProgram

__all__ = ["History", "Precision", "StepResult", "TrainingLoop", "TrainingProgram", "grad_scaler"]
