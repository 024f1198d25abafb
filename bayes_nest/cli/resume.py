"""Resuming ``bayes-nest fit`` only where the run continues unchanged.

Every training checkpoint ``fit`` writes carries the settings of its run in its metadata line
(`bayes_nest.infer.checkpoint.stamped`): method, architecture, data source and split, and
every training option except the number of epochs. ``fit --resume`` compares them with its own
settings and refuses to continue when any differs, naming each with both values, so that a
resumed model never records settings it was not trained with and never trains on another
split (examples of the first epochs would land in the recorded validation or test split). It
also refuses ``--epochs`` below the epoch the checkpoint has reached.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["check_resume", "run_settings"]

_OPTION_NAMES = {
    "split_seed": "--split-seed",
    "val_fraction": "--val-fraction",
    "test_fraction": "--test-fraction",
    "label_column": "--label-column",
    "model": "--model",
    "model_options": "model options",
    "method": "--method",
    "data": "--data",
}


def run_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a resumed run must share with the checkpoint's run (JSON-like), from
    `bayes_nest.cli.options.fit_settings`'s result."""
    import json

    from ..app.train import training_options

    method = settings["method"]
    train, data = settings["rest"]
    options = training_options(method, train)
    options.pop("epochs")
    source = os.fspath(settings["data"])
    if os.path.exists(source):
        source = os.path.realpath(source)
    run = {
        "method": method,
        "model": settings["spec"].name,
        "model_options": settings["spec"].options,
        "data": source,
        "split_seed": data["seed"],
        "val_fraction": data["val_fraction"],
        "test_fraction": data["test_fraction"],
        "label_column": data.get("label_column"),
        **options,
    }
    for key in ("num_images", "image_size"):  # the size of the built-in segmentation set
        if data.get(key) is not None:
            run[key] = data[key]
    return json.loads(json.dumps(run, sort_keys=True, default=str))


def _option(key: str) -> str:
    return _OPTION_NAMES.get(key, "--" + key.replace("_", "-"))


def check_resume(path: str, run: dict[str, Any], epochs: int | None) -> None:
    """Refuse to resume from the training checkpoint ``path`` unless it was written by a run
    with the settings ``run`` (from `run_settings`) and has not passed ``epochs``.

    Raises
    ------
    ValueError
        Naming every differing setting with its value here and in the checkpoint, or the
        checkpoint's epoch; or a checkpoint that records no settings.
    """
    from ..infer.checkpoint import checkpoint_info, load_checkpoint

    info = checkpoint_info(path)
    recorded = (info.get("extra") or {}).get("run")
    if not isinstance(recorded, dict):
        raise ValueError(
            f"checkpoint {path!r} does not record the settings of the run that wrote it "
            "(written outside 'bayes-nest fit' or by an older version), so resuming cannot be "
            "checked to continue the same run; pass --force to start over"
        )
    differ = [
        f"{_option(key)} {run.get(key)!r} (checkpoint: {recorded.get(key)!r})"
        for key in sorted(set(run) | set(recorded))
        if run.get(key) != recorded.get(key)
    ]
    if differ:
        raise ValueError(
            f"--resume would continue checkpoint {path!r} with other settings than it was "
            f"trained with: {'; '.join(differ)}. Resume with the checkpoint's settings, or "
            "pass --force (without --resume) to start over"
        )
    if epochs is not None:
        reached = load_checkpoint(path).get("epoch")
        if isinstance(reached, int) and epochs < reached:
            raise ValueError(
                f"--epochs {epochs} is below the {reached} epochs checkpoint {path!r} has "
                f"already trained; give --epochs {reached} or more"
            )
