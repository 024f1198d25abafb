"""The methods compared by ``bnnn_vs_fn3.py``: training with one tuning setting, and prediction.

Each entry of :data:`METHODS` has a tuning grid (4 settings each, as the protocol fixes) and a
trainer ``train(data, seed, epochs, setting) -> {row name: predictor}``; a predictor maps
``(x, width)`` to probabilities ``(N, K)`` or ``(S, N, K)``. One trained model can give several
rows (BNNN with and without keep-marginal scaling). Temperature-scaled rows are derived from the
rows named in :data:`TEMPERED` by the evaluation, not trained. Only the public training API is
used (``FN3Trainer``, ``BNNN.fit``/``predict``, ``predict_probs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from torch import nn

from bayes_nest.data import as_loader
from bayes_nest.infer import BNNN, FN3Trainer, predict_probs
from bayes_nest.models import MLP

GROUPS, HIDDEN, BATCH, SAMPLES, ENSEMBLE = 8, [128, 128], 128, 8, 5
LRS = [1e-3, 3e-3]
BNNN_INIT_KEEP, BNNN_PRIOR_KEEP = 0.9, 0.9

Predictor = Callable[[torch.Tensor, int], torch.Tensor]

# Per method: its grid (learning rate x one knob; every grid has 4 settings), whether it is
# nested (scored at widths 1..GROUPS) and the row whose validation NLL the tuning rule reads.
GRIDS: dict[str, dict[str, list[Any]]] = {
    "fn3": {"lr": LRS, "keep_prob": [0.8, 0.9]},
    "mc_dropout": {"lr": LRS, "dropout": [0.1, 0.3]},
    "ensemble": {"lr": LRS, "weight_decay": [0.0, 1e-4]},
    "bnnn": {"lr": LRS, "kl_scale": [0.1, 0.3]},
    "bnnn_true": {"lr": LRS, "prior_keep_prob": [0.8, 0.9]},
}
NESTED = {"fn3": True, "mc_dropout": False, "ensemble": False, "bnnn": True, "bnnn_true": True}
TEMPERED = {"fn3": "fn3_ts", "mc_dropout": "mc_dropout_ts"}


def widths(method: str) -> list[int]:
    """The sub-network widths (blocks kept per hidden layer) a method is scored at."""
    return list(range(1, GROUPS + 1)) if NESTED[method] else [GROUPS]


def config(width: int) -> dict[str, int]:
    return {f"hidden.{i}": width for i in range(len(HIDDEN))}


def plain_mlp(features: int, classes: int, dropout: float = 0.0) -> nn.Sequential:
    """The un-nested network of the same layer sizes, with optional dropout after each layer."""
    layers: list[nn.Module] = []
    previous = features
    for width in HIDDEN:
        layers += [nn.Linear(previous, width), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = width
    layers.append(nn.Linear(previous, classes))
    return nn.Sequential(*layers)


def train_plain(model: nn.Module, train, epochs: int, seed: int, lr: float, wd: float = 0.0):
    """Adam on cross-entropy for ``epochs`` epochs (the baselines' training loop)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    loader = as_loader(train, BATCH, shuffle=True, seed=seed)
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    return model


def _fn3(data, seed: int, epochs: int, setting: dict) -> dict[str, Predictor]:
    torch.manual_seed(seed)
    net = MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS)
    FN3Trainer(
        net,
        optimizer=lambda p: torch.optim.Adam(p, lr=setting["lr"]),
        keep_prob=setting["keep_prob"],
        batch_size=BATCH,
        seed=seed,
        progress=False,
    ).fit(data.train, epochs=epochs)
    return {"fn3": lambda x, w: predict_probs(net, x, config(w))}


def _mc_dropout(data, seed: int, epochs: int, setting: dict) -> dict[str, Predictor]:
    torch.manual_seed(seed)
    model = plain_mlp(data.num_features, data.num_classes, setting["dropout"])
    train_plain(model, data.train, epochs, seed, setting["lr"])

    @torch.no_grad()
    def predict(x: torch.Tensor, width: int) -> torch.Tensor:
        model.train()  # dropout on: SAMPLES stochastic forward passes
        torch.manual_seed(seed)
        return torch.stack([torch.softmax(model(x), -1) for _ in range(SAMPLES)])

    return {"mc_dropout": predict}


def _ensemble(data, seed: int, epochs: int, setting: dict) -> dict[str, Predictor]:
    members = []
    for m in range(ENSEMBLE):
        torch.manual_seed(1000 * seed + m)
        member = plain_mlp(data.num_features, data.num_classes)
        train_plain(
            member, data.train, epochs, 1000 * seed + m, setting["lr"], setting["weight_decay"]
        )
        members.append(member.eval())

    @torch.no_grad()
    def predict(x: torch.Tensor, width: int) -> torch.Tensor:
        return torch.stack([torch.softmax(m(x), -1) for m in members])

    return {"ensemble": predict}


def _bnnn_rows(name: str, data, seed: int, epochs: int, **kw) -> dict[str, Predictor]:
    lr = kw.pop("lr")
    torch.manual_seed(seed)
    net = MLP(data.num_features, HIDDEN, data.num_classes, groups=GROUPS)
    bnnn = BNNN(net, init_keep_prob=BNNN_INIT_KEEP, **kw)
    bnnn.fit(
        data.train,
        epochs=epochs,
        optimizer=pyro.optim.Adam({"lr": lr}),
        batch_size=BATCH,
        seed=seed,
        progress=False,
    )

    def predictor(scale: bool) -> Predictor:
        def predict(x: torch.Tensor, width: int) -> torch.Tensor:
            torch.manual_seed(seed)
            return bnnn.predict(
                x, config=config(width), num_samples=SAMPLES, scale_by_keep_marginals=scale
            )

        return predict

    return {name: predictor(True), f"{name}_unscaled": predictor(False)}


def _bnnn(data, seed: int, epochs: int, setting: dict) -> dict[str, Predictor]:
    """Tempered posterior: the weight KL scaled by ``kl_scale`` < 1."""
    kw = {"lr": setting["lr"], "kl_scale": setting["kl_scale"], "prior_keep_prob": BNNN_PRIOR_KEEP}
    return _bnnn_rows("bnnn", data, seed, epochs, **kw)


def _bnnn_true(data, seed: int, epochs: int, setting: dict) -> dict[str, Predictor]:
    """True posterior: ``kl_scale`` = 1."""
    kw = {"lr": setting["lr"], "kl_scale": 1.0, "prior_keep_prob": setting["prior_keep_prob"]}
    return _bnnn_rows("bnnn_true", data, seed, epochs, **kw)


METHODS: dict[str, Callable[..., dict[str, Predictor]]] = {
    "fn3": _fn3,
    "mc_dropout": _mc_dropout,
    "ensemble": _ensemble,
    "bnnn": _bnnn,
    "bnnn_true": _bnnn_true,
}
