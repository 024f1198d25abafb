"""Search for the best sub-network per budget: greedy front, baselines, objectives, cascade."""

from .baselines import evolutionary, exhaustive, random_search
from .cascade import Cascade, CascadeResult, cascade_curve, uncertainty
from .front import Front, Point
from .greedy import greedy
from .objectives import OBJECTIVES, SCORES, Evaluator, make_objective, score_name

__all__ = [
    "OBJECTIVES",
    "SCORES",
    "Cascade",
    "CascadeResult",
    "Evaluator",
    "Front",
    "Point",
    "cascade_curve",
    "evolutionary",
    "exhaustive",
    "greedy",
    "make_objective",
    "random_search",
    "score_name",
    "uncertainty",
]
