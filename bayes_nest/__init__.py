"""bayes_nest: fully nested neural networks with learned orderings (FN3 and Bayesian nested networks)."""

__version__ = "0.1.0"
