"""The training defaults of FN3 and BNNN, as the library's training code imports them; they are
defined in `bayes_nest.defaults` (see there)."""

from ..defaults import BNNN_DEFAULTS, DEFAULT_METHOD, FN3_DEFAULTS, METHOD_DEFAULTS, defaults_of

__all__ = ["BNNN_DEFAULTS", "DEFAULT_METHOD", "FN3_DEFAULTS", "METHOD_DEFAULTS", "defaults_of"]
