"""Options of the ``bayes-nest`` command: option groups and config files (value types in
`bayes_nest.cli.values`, re-exported here)."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from typing import Any

from .._files import require_file
from .values import (  # noqa: F401  (re-exported: opt.<type> in the command definitions)
    TRAINING_MAX,
    budget,
    budget_list,
    choice,
    column,
    fraction,
    int_list,
    integer,
    nonneg_float,
    nonneg_int,
    number,
    ood_kind,
    positive_float,
    positive_int,
    probability,
    subnet,
    training_number,
    unit_interval,
)

# ----------------------------------------------------------------------------- fit options

# name -> (type, destination, help); destination: "model" options, "train" options, "data"
# loading options, or "run" (the command itself).
FIT_OPTIONS: dict[str, tuple[Callable[[Any], Any], str, str]] = {
    "data": (
        str,
        "run",
        "built-in dataset (digits, mnist1d; segmentation: lesions) or a .npz/.csv file "
        "(required; segmentation: .npz with images (N,C,H,W) and masks (N,A,H,W))",
    ),
    "task": (
        choice("classification", "segmentation"),
        "run",
        "what the model predicts (segmentation: a nested U-Net, model unet; default: the "
        "model's task, classification unless --model unet)",
    ),
    "method": (
        choice("fn3", "bnnn"),
        "run",
        "fn3 (ordered dropout) or bnnn (Bayesian)",
    ),
    "model": (
        choice("mlp", "convnet", "resnet", "resnext", "vgg", "unet"),
        "run",
        "architecture",
    ),
    "init_from": (str, "run", "start from the weights of this FN3 model file"),
    "hidden": (int_list, "model", "hidden widths, e.g. 128,128 (mlp; convnet: one width)"),
    "channels": (int_list, "model", "conv channels, e.g. 16,32 (convnet)"),
    "widths": (int_list, "model", "stage widths (resnet, resnext; unet: one per level)"),
    "depths": (int_list, "model", "blocks per stage (resnet, resnext)"),
    "groups": (positive_int, "model", "ordered blocks per width axis"),
    "always_on": (nonneg_int, "model", "leading blocks never dropped"),
    "bits": (positive_int, "model", "also nest the weights' quantization bits"),
    "epochs": (positive_int, "train", "training epochs"),
    "batch_size": (positive_int, "train", "mini-batch size (of all processes under torchrun)"),
    "lr": (training_number(positive_float), "train", "learning rate (Adam)"),
    "weight_decay": (training_number(nonneg_float), "train", "weight decay (fn3)"),
    "keep_prob": (probability, "train", "keep rate of the ordered-dropout prior"),
    "distribution": (choice("geometric", "uniform"), "train", "keep-count prior (fn3)"),
    "sandwich": (
        choice("none", "full", "smallest", "both"),
        "train",
        "also train the full/smallest network each step (fn3)",
    ),
    "temperature": (training_number(positive_float), "train", "Downhill temperature (bnnn)"),
    "prior_scale": (
        training_number(positive_float),
        "train",
        "std of the Normal weight prior (bnnn)",
    ),
    "kl_scale": (
        training_number(nonneg_float),
        "train",
        "weight of the weight KL (bnnn; 1 = ELBO)",
    ),
    "init_keep_prob": (probability, "train", "initial posterior keep probability (bnnn)"),
    "predict_samples": (positive_int, "train", "posterior samples per prediction (bnnn)"),
    "seed": (integer, "train", "random seed of training"),
    "split_seed": (integer, "data", "seed of the train/val/test split"),
    "val_fraction": (fraction, "data", "validation share of a file's examples"),
    "test_fraction": (fraction, "data", "test share of a file's examples"),
    "label_column": (
        column,
        "data",
        "label column of a CSV file (index or name; default: the last column)",
    ),
    "num_images": (positive_int, "data", "images of the built-in set lesions (default 1000)"),
    "image_size": (positive_int, "data", "side in pixels of the lesions images (default 32)"),
}

_DATA_KEYS = {
    "split_seed": "seed",
    "val_fraction": "val_fraction",
    "test_fraction": "test_fraction",
}


def option_default(name: str, method: str | None = None) -> Any:
    """The value option ``name`` of ``fit`` takes when neither the command line nor a config
    file gives it, read from the library (never a copy of its own).

    Everything comes from `bayes_nest.defaults` (which loads no torch, so building the parser
    stays fast): training options from the table of ``method`` (``None``: the default
    method), split options from ``SPLIT_DEFAULTS``, ``--method`` from ``DEFAULT_METHOD`` and
    ``--model`` from ``DEFAULT_MODEL``. Model options default to ``None``: the architecture's
    own keyword defaults apply.

    Raises
    ------
    KeyError
        For a name that is no option of ``fit``, or a training option ``method`` does not
        take.
    """
    from ..defaults import DEFAULT_METHOD, DEFAULT_MODEL, SPLIT_DEFAULTS, defaults_of

    if name not in FIT_OPTIONS:
        raise KeyError(f"{name!r} is no option of fit")
    if name == "method":
        return DEFAULT_METHOD
    if name == "model":
        return DEFAULT_MODEL
    destination = FIT_OPTIONS[name][1]
    if destination == "train":
        table = defaults_of(method or option_default("method"))
        if name not in table:
            raise KeyError(f"option {name!r} does not apply to method {method!r}")
        return table[name]
    if name in _DATA_KEYS:
        return SPLIT_DEFAULTS[_DATA_KEYS[name]]
    return None  # data, init_from, label_column and the model options: none unless given


def _default_text(name: str) -> str:
    """`` (default ...)`` for the help of option ``name``, read from `option_default`."""
    from ..defaults import METHOD_DEFAULTS

    def shown(value: Any) -> str:
        return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)

    if FIT_OPTIONS[name][1] == "train":
        found = {m: shown(t[name]) for m, t in METHOD_DEFAULTS.items() if name in t}
        if len(set(found.values())) == 1:
            return f" (default {next(iter(found.values()))})"
        return " (default " + ", ".join(f"{m} {v}" for m, v in found.items()) + ")"
    value = option_default(name)
    return "" if value is None else f" (default {shown(value)})"


def add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        help="TOML, YAML or JSON file of options (keys as below; command-line options override it)",
    )
    for name, (kind, _, text) in FIT_OPTIONS.items():
        help_text = text + _default_text(name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=kind, help=help_text)
    p.add_argument(
        "--model-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='any other model option, value as JSON (e.g. norm="batch")',
    )
    p.add_argument("--out", help="model file to write (required)")
    p.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing --out file (and start over, replacing an existing --checkpoint)",
    )


def read_config_file(path: str) -> dict[str, Any]:
    """Options from a ``.toml``, ``.yaml``/``.yml`` or ``.json`` file (a mapping)."""
    require_file(path, "config file")
    suffix = os.path.splitext(path)[1].lower()
    with open(path, "rb") as f:
        raw = f.read()
    try:
        if suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(raw.decode())
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError:
                raise ImportError("YAML config files need PyYAML: pip install pyyaml") from None
            data = yaml.safe_load(raw.decode())
        elif suffix == ".json":
            data = json.loads(raw.decode())
        else:
            raise ValueError(f"config file {path!r} must end in .toml, .yaml, .yml or .json")
    except (ImportError, ValueError) as e:
        if isinstance(e, ImportError) or str(e).startswith("config file"):
            raise
        raise ValueError(f"config file {path!r} is not valid {suffix[1:].upper()}: {e}") from None
    except Exception as e:  # yaml.YAMLError and friends
        msg = " ".join(str(e).split())
        raise ValueError(f"config file {path!r} is not valid {suffix[1:].upper()}: {msg}") from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r} must hold a mapping of options")
    return data


def _from_file(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = read_config_file(path)
    values, model_options = {}, {}
    model = raw.get("model")
    if isinstance(model, dict):  # model: {name: mlp, hidden: [...], ...}
        model = dict(model)
        raw["model"] = model.pop("name", None)
        for key, value in model.items():
            key = str(key).replace("-", "_")
            if key in FIT_OPTIONS and FIT_OPTIONS[key][1] == "model":
                raw[key] = value
            else:
                model_options[key] = value
    for key, value in raw.items():
        name = str(key).replace("-", "_")
        if value is None:
            continue
        if name not in FIT_OPTIONS:
            known = ", ".join(sorted(FIT_OPTIONS))
            raise ValueError(f"config file {path!r}: unknown option {key!r} (options: {known})")
        try:
            values[name] = FIT_OPTIONS[name][0](value)
        except argparse.ArgumentTypeError as e:
            raise ValueError(f"config file {path!r}: option {key!r}: {e}") from None
    return values, model_options


def fit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge a config file and the command line into the settings of ``fit``."""
    from ..app.spec import ModelSpec

    values, model_options = _from_file(args.config) if args.config else ({}, {})
    values.update({k: getattr(args, k) for k in FIT_OPTIONS if getattr(args, k) is not None})
    for item in args.model_option:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--model-option expects KEY=VALUE, got {item!r}")
        try:
            model_options[key.strip().replace("-", "_")] = json.loads(text)
        except json.JSONDecodeError:
            model_options[key.strip().replace("-", "_")] = text
    if not values.get("data"):
        raise ValueError("no training data: pass --data (a built-in name or a .npz/.csv file)")
    if not args.out:
        raise ValueError("no output file: pass --out MODEL_FILE")
    for key, value in values.items():
        if FIT_OPTIONS[key][1] == "model":
            model_options[key] = value
    model = values.get("model")
    task = values.get("task")
    if model is None:
        model = "unet" if task == "segmentation" else option_default("model")
    spec_task = ModelSpec(model).task
    if task is not None and task != spec_task:
        raise ValueError(
            f"--task {task} does not fit --model {model} (a {spec_task} model); "
            + ("use --model unet" if task == "segmentation" else "choose a classifier")
        )
    task = spec_task
    sized = [k for k in ("num_images", "image_size") if k in values]
    if sized and task != "segmentation":
        raise ValueError(
            f"--{sized[0].replace('_', '-')} sizes the built-in segmentation set; it does not "
            "apply to classification (--task segmentation to train on lesions)"
        )
    if task == "segmentation" and "label_column" in values:
        raise ValueError("--label-column applies to CSV files of classification data only")
    if model == "convnet" and isinstance(model_options.get("hidden"), list):
        hidden = model_options["hidden"]
        if len(hidden) != 1:
            raise ValueError(f"convnet takes one hidden width, got {hidden}")
        model_options["hidden"] = hidden[0]
    train = {k: v for k, v in values.items() if FIT_OPTIONS[k][1] == "train"}
    data = {k: v for k, v in values.items() if FIT_OPTIONS[k][1] == "data"}
    data = {
        **{key: option_default(name) for name, key in _DATA_KEYS.items()},
        **{_DATA_KEYS.get(k, k): v for k, v in data.items()},
    }
    return {
        "spec": ModelSpec(model, model_options),
        "task": task,
        "method": values.get("method", option_default("method")),
        "rest": (train, data),
        "data": values["data"],
        "init_from": values.get("init_from"),
        "out": args.out,
        "force": args.force,
    }


# ----------------------------------------------------------------------------- other commands


def add_model_data(p: argparse.ArgumentParser, split: str) -> None:
    p.add_argument("checkpoint", help="trained model file (from 'bayes-nest fit')")
    p.add_argument("--data", required=True, help="built-in name or .npz/.csv file")
    p.add_argument(
        "--split",
        default=split,
        choices=("train", "val", "test", "all"),
        help=f"split of the data (the model's own split; 'all': every example of a new "
        f"file; default {split}); networks with batch norm get statistics per sub-network "
        "from the training split (not with 'all')",
    )
    p.add_argument("--label-column", type=column, help="label column of a CSV file")


def data_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.label_column is None else {"label_column": args.label_column}


def add_selection(p: argparse.ArgumentParser, multiple: bool) -> None:
    action = "append" if multiple else "store"
    p.add_argument(
        "--subnet",
        type=subnet,
        action=action,
        help="sub-network AXIS=COUNT,... (or a JSON object or .json file)"
        + (" (repeatable)" if multiple else ""),
    )
    p.add_argument("--front", help="front JSON file (from 'bayes-nest search')")
    p.add_argument(
        "--budget",
        type=budget,
        action=action,
        help="cost budget (units of the front's cost, or a share such as 25%%)"
        + (" (repeatable)" if multiple else ""),
    )


def add_search_options(p: argparse.ArgumentParser) -> None:
    from ..defaults import (
        DEFAULT_COST,
        DEPRECATED_SCORES,
        SCORE_DEFAULTS,
        SCORES,
        SEGMENTATION_SCORES,
    )

    p.add_argument(
        "--cost",
        default=DEFAULT_COST,
        choices=("macs", "params", "weight_bits", "bitops"),
        help=f"cost metric (default {DEFAULT_COST})",
    )

    p.add_argument(
        "--score",
        choices=(*SCORES, *SEGMENTATION_SCORES, *DEPRECATED_SCORES),
        metavar="SCORE",
        help=f"score to maximise: {', '.join(SCORES)} (default {SCORES[0]}; neg_nll is "
        "-NLL; ece_penalized is accuracy - w * ECE; ece_capped is the accuracy while the ECE "
        "is at most --max-ece, else -ECE); segmentation models: "
        f"{', '.join(SEGMENTATION_SCORES)} (default {SEGMENTATION_SCORES[0]}: -GED; "
        "neg_pixel_nll: -pixel NLL)",
    )
    p.add_argument(
        "--ece-weight",
        type=nonneg_float,
        default=SCORE_DEFAULTS["ece_weight"],
        help=f"weight w of the ECE in ece_penalized (default {SCORE_DEFAULTS['ece_weight']:g})",
    )
    p.add_argument(
        "--max-ece",
        type=unit_interval,
        default=SCORE_DEFAULTS["max_ece"],
        help=f"ECE ceiling of ece_capped (default {SCORE_DEFAULTS['max_ece']:g})",
    )
    p.add_argument("--samples", type=positive_int, help="posterior samples (BNNN)")


def selected_configs(args: argparse.Namespace, model: Any) -> list[tuple[str, dict[str, int]]]:
    """The sub-networks a command should use, as ``(label, config)`` pairs: given ones
    (``--subnet``), the front's best for each ``--budget``, or the full network."""
    from ..subnet import validate_config

    subnets = args.subnet if isinstance(args.subnet, list) else [args.subnet] * bool(args.subnet)
    budgets = args.budget if isinstance(args.budget, list) else [args.budget] * bool(args.budget)
    if subnets and (args.front or budgets):
        raise ValueError("give either --subnet or --front with --budget, not both")
    if budgets and not args.front:
        raise ValueError("--budget needs --front FRONT_JSON (from 'bayes-nest search')")
    if args.front and not budgets:
        raise ValueError("--front needs --budget (cost units, or a share such as 25%)")
    if subnets:
        return [("-", validate_config(model.module, s, partial=True)) for s in subnets]
    if args.front:
        from ..app.front import best_config, read_front

        front = read_front(args.front, model)
        return [(str(b), best_config(front, b, model)) for b in budgets]
    return [("full", validate_config(model.module, {}))]
