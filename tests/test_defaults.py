"""One source for every default: the library's (`bayes_nest.defaults`).

Every option of ``bayes-nest fit`` is compared, for both methods and for the command line and a
config file, with the default of the library code that consumes it (read from that code's
signature, or observed: Adam's first step moves every parameter by its learning rate). An
option added to the command without an entry in `LIBRARY_SOURCES` fails here.
"""

import inspect
import subprocess
import sys

import pytest
import torch

from bayes_nest import cli, demo, pipeline, workflow
from bayes_nest.app import train as pipeline_train
from bayes_nest.cli import build_parser
from bayes_nest.cli import options as opt
from bayes_nest.data import (
    from_arrays,
    load_dataset,
    load_segmentation,
    segmentation_from_arrays,
)
from bayes_nest.defaults import (
    BNNN_DEFAULTS,
    DEFAULT_BUDGETS,
    DEFAULT_COST,
    DEFAULT_METHOD,
    FN3_DEFAULTS,
    MASK_SITE_TEMPERATURE,
    METHOD_DEFAULTS,
    SPLIT_DEFAULTS,
    defaults_of,
)
from bayes_nest.infer import FN3Trainer, fit_fn3
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.bnnn_fit import fit as bnnn_fit
from bayes_nest.infer.bnnn_predict import predict as bnnn_predict
from bayes_nest.infer.masks import mask_prior, mask_priors
from bayes_nest.infer.ordered_dropout import OrderedDropout
from bayes_nest.infer.vou import VariationalOrderingUnit
from bayes_nest.models import MLP
from bayes_nest.outputs import export_subnet
from bayes_nest.pipeline_segmentation import load_segmentation_data
from bayes_nest.subnet import COST_METRICS
from bayes_nest.testing import assert_close

METHODS = tuple(METHOD_DEFAULTS)
MASK_SITES = {"mask_site_temperature": MASK_SITE_TEMPERATURE}


def default(fn, name):
    """The default of parameter ``name`` in ``fn``'s signature."""
    value = inspect.signature(fn).parameters[name].default
    assert value is not inspect.Parameter.empty, f"{fn.__qualname__}({name}) has no default"
    return value


def tiny_data(n=16, d=6, k=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, d, generator=g), torch.arange(n) % k


def first_adam_step(train_once, params_of):
    """The largest parameter change of one optimizer step: Adam's first step moves every
    parameter with a non-zero gradient by ``lr * |g| / (|g| + eps)``, i.e. by ``lr``."""
    torch.manual_seed(0)
    net = MLP(6, [8], 3, groups=4)
    owner = train_once(net)
    before = [p.detach().clone() for p in params_of(owner, net)]
    owner.step()
    after = [p.detach() for p in params_of(owner, net)]
    return max(float((a - b).abs().max()) for a, b in zip(after, before, strict=True))


def fn3_default_lr(_method):
    x, y = tiny_data()

    class Once:
        def __init__(self, net):
            self.net = net

        def step(self):
            fit_fn3(self.net, (x, y), epochs=1, batch_size=len(y), seed=0, progress=False)

    return first_adam_step(Once, lambda owner, net: list(net.parameters()))


def bnnn_default_lr(_method):
    x, y = tiny_data()

    class Once:
        def __init__(self, net):
            self.bnnn = BNNN(net)

        def step(self):
            self.bnnn.fit((x, y), epochs=1, batch_size=len(y), seed=0, progress=False)

    def params(owner, net):
        return [p for p in owner.bnnn.parameters() if p.requires_grad]

    return first_adam_step(Once, params)


def fn3_default_weight_decay(_method):
    trainer = FN3Trainer(MLP(6, [8], 3, groups=4), progress=False)
    return trainer.optimizer.param_groups[0]["weight_decay"]


def by_method(**sources):
    """A source per method; a method without one does not take the option."""
    return lambda method: sources[method](method) if method in sources else NotImplemented


def table(name):
    """The defaults table itself (options whose library functions take no default: the
    number of epochs, and the seed of an application run, where the library draws from
    torch's global generator)."""
    return lambda method: defaults_of(method)[name]


def sig(fn, name):
    return lambda method: default(fn, name)


LIBRARY_SOURCES = {
    "data": lambda method: None,
    "method": lambda method: default(pipeline.fit, "method"),
    "model": lambda method: pipeline.ModelSpec().name,  # DEFAULT_MODEL
    "task": lambda method: pipeline.ModelSpec().task,
    "num_images": lambda method: default(load_segmentation_data, "num_images"),
    "image_size": lambda method: default(load_segmentation_data, "image_size"),
    "init_from": lambda method: default(pipeline.fit, "init"),
    **{
        name: lambda method: "model class default"
        for name in ("hidden", "channels", "widths", "depths", "groups", "always_on", "bits")
    },
    "epochs": table("epochs"),
    "batch_size": by_method(fn3=sig(FN3Trainer, "batch_size"), bnnn=sig(bnnn_fit, "batch_size")),
    "lr": by_method(fn3=fn3_default_lr, bnnn=bnnn_default_lr),
    "weight_decay": by_method(fn3=fn3_default_weight_decay),
    "keep_prob": by_method(fn3=sig(FN3Trainer, "keep_prob"), bnnn=sig(BNNN, "prior_keep_prob")),
    "distribution": by_method(fn3=sig(FN3Trainer, "distribution")),
    "sandwich": by_method(fn3=sig(FN3Trainer, "sandwich")),
    "temperature": by_method(bnnn=sig(BNNN, "temperature")),
    "prior_scale": by_method(bnnn=sig(BNNN, "prior_scale")),
    "kl_scale": by_method(bnnn=sig(BNNN, "kl_scale")),
    "init_keep_prob": by_method(bnnn=sig(BNNN, "init_keep_prob")),
    "predict_samples": by_method(bnnn=sig(BNNN.predict, "num_samples")),
    "seed": table("seed"),
    "split_seed": lambda method: default(workflow.load_data, "seed"),
    "val_fraction": lambda method: default(workflow.load_data, "val_fraction"),
    "test_fraction": lambda method: default(workflow.load_data, "test_fraction"),
    "label_column": lambda method: default(workflow.load_data, "label_column"),
}


def effective(settings, name, method):
    """What ``fit`` gets for option ``name`` from `fit_settings`'s result."""
    destination = opt.FIT_OPTIONS[name][1]
    train, data = settings["rest"]
    if destination == "train":
        options = pipeline_train.training_options(method, train)
        return options.get(name, NotImplemented)
    if destination == "data":
        return data.get("seed" if name == "split_seed" else name)
    if destination == "model":
        return settings["spec"].options.get(name, "model class default")
    return {"data": None, "method": settings["method"], "model": settings["spec"].name}.get(
        name, settings.get(name)
    )


def settings_from(source, method, tmp_path):
    """`fit_settings` of a run that names only the data and ``method`` (``None``: not even
    the method)."""
    if source == "command line":
        argv = ["fit", "--data", "digits", "--out", "m.ckpt"]
        argv += [] if method is None else ["--method", method]
        return opt.fit_settings(build_parser().parse_args(argv))
    config = tmp_path / "fit.toml"
    chosen = "" if method is None else f'method = "{method}"\n'
    config.write_text(f'data = "digits"\n{chosen}')
    args = build_parser().parse_args(["fit", "--config", str(config), "--out", "m.ckpt"])
    return opt.fit_settings(args)


@pytest.mark.parametrize("source", ["command line", "config file"])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("name", sorted(opt.FIT_OPTIONS))
def test_every_fit_option_defaults_to_the_library(name, method, source, tmp_path):
    assert name in LIBRARY_SOURCES, (
        f"option {name!r} of 'bayes-nest fit' has no library source: give it a default in "
        "bayes_nest.defaults (or the library function it feeds) and list it here"
    )
    # the method's own default is seen when no method is named; the others when each is
    settings = settings_from(source, None if name == "method" else method, tmp_path)
    if name == "data":  # required: the file names it
        assert settings["data"] == "digits"
        return
    library = LIBRARY_SOURCES[name](method)
    got = effective(settings, name, method)
    if name == "lr":  # observed: one Adam step in float32, lr * |g| / (|g| + 1e-8)
        assert_close(library, got, rtol=1e-3, atol=0.0)
    else:
        assert got == library
    if opt.FIT_OPTIONS[name][1] == "train" and got is not NotImplemented:
        assert got == opt.option_default(name, method)


@pytest.mark.parametrize(
    ("fn", "parameter", "key", "table_"),
    [
        (FN3Trainer, "keep_prob", "keep_prob", FN3_DEFAULTS),
        (FN3Trainer, "distribution", "distribution", FN3_DEFAULTS),
        (FN3Trainer, "sandwich", "sandwich", FN3_DEFAULTS),
        (FN3Trainer, "batch_size", "batch_size", FN3_DEFAULTS),
        (fit_fn3, "keep_prob", "keep_prob", FN3_DEFAULTS),
        (fit_fn3, "distribution", "distribution", FN3_DEFAULTS),
        (fit_fn3, "sandwich", "sandwich", FN3_DEFAULTS),
        (fit_fn3, "batch_size", "batch_size", FN3_DEFAULTS),
        (OrderedDropout, "keep_prob", "keep_prob", FN3_DEFAULTS),
        (OrderedDropout, "distribution", "distribution", FN3_DEFAULTS),
        (OrderedDropout, "sandwich", "sandwich", FN3_DEFAULTS),
        (BNNN, "prior_keep_prob", "keep_prob", BNNN_DEFAULTS),
        (BNNN, "init_keep_prob", "init_keep_prob", BNNN_DEFAULTS),
        (BNNN, "temperature", "temperature", BNNN_DEFAULTS),
        (BNNN, "prior_scale", "prior_scale", BNNN_DEFAULTS),
        (BNNN, "kl_scale", "kl_scale", BNNN_DEFAULTS),
        (BNNN.fit, "batch_size", "batch_size", BNNN_DEFAULTS),
        (BNNN.predict, "num_samples", "predict_samples", BNNN_DEFAULTS),
        (bnnn_fit, "batch_size", "batch_size", BNNN_DEFAULTS),
        (bnnn_predict, "num_samples", "predict_samples", BNNN_DEFAULTS),
        (VariationalOrderingUnit, "init_keep_prob", "init_keep_prob", BNNN_DEFAULTS),
        (VariationalOrderingUnit, "temperature", "temperature", BNNN_DEFAULTS),
        (mask_prior, "keep_prob", "keep_prob", BNNN_DEFAULTS),
        (mask_priors, "keep_prob", "keep_prob", BNNN_DEFAULTS),
        (mask_prior, "temperature", "mask_site_temperature", MASK_SITES),
        (mask_priors, "temperature", "mask_site_temperature", MASK_SITES),
        (OrderedDropout, "temperature", "mask_site_temperature", MASK_SITES),
    ],
    ids=lambda v: getattr(v, "__qualname__", None) if callable(v) else None,
)
def test_every_library_entry_point_takes_the_same_default(fn, parameter, key, table_):
    assert default(fn, parameter) == table_[key]


@pytest.mark.parametrize(
    "fn",
    [from_arrays, load_dataset, workflow.load_data, segmentation_from_arrays, load_segmentation],
)
@pytest.mark.parametrize("name", sorted(SPLIT_DEFAULTS))
def test_every_loader_takes_the_same_split_defaults(fn, name):
    assert default(fn, name) == SPLIT_DEFAULTS[name]


@pytest.mark.parametrize("method", METHODS)
def test_training_options_are_the_tables_when_nothing_is_given(method):
    assert pipeline_train.training_options(method, {}) == dict(defaults_of(method))
    assert pipeline_train.training_options(method, {"lr": None}) == dict(defaults_of(method))


def test_the_pipeline_names_are_the_library_tables():
    assert pipeline.FN3_DEFAULTS is FN3_DEFAULTS and pipeline.BNNN_DEFAULTS is BNNN_DEFAULTS
    assert default(pipeline.fit, "method") == DEFAULT_METHOD == opt.option_default("method")


@pytest.mark.parametrize("mapping", [FN3_DEFAULTS, BNNN_DEFAULTS, SPLIT_DEFAULTS])
def test_the_tables_are_read_only(mapping):
    with pytest.raises(TypeError):
        mapping["lr"] = 1.0


def test_unknown_method_is_named():
    with pytest.raises(ValueError, match="'sgd'"):
        defaults_of("sgd")
    with pytest.raises(KeyError, match="temperature"):
        opt.option_default("temperature", "fn3")


def test_help_shows_the_library_defaults(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"learning rate (Adam) (default {FN3_DEFAULTS['lr']:g})" in text
    keep = f"(default fn3 {FN3_DEFAULTS['keep_prob']:g}, bnnn {BNNN_DEFAULTS['keep_prob']:g})"
    assert keep in text
    assert f"seed of the train/val/test split (default {SPLIT_DEFAULTS['seed']})" in text


def test_explicit_options_override_the_defaults(tmp_path):
    args = build_parser().parse_args(
        ["fit", "--data", "digits", "--out", "m.ckpt", "--lr", "0.01", "--val-fraction", "0.3"]
    )
    settings = opt.fit_settings(args)
    train, data = settings["rest"]
    assert pipeline_train.training_options("fn3", train)["lr"] == 0.01
    assert data == {**SPLIT_DEFAULTS, "val_fraction": 0.3}


def test_sandwich_none_named_or_left_out_gives_the_same_options():
    named = pipeline_train.training_options("fn3", {"sandwich": "none"})
    assert named == pipeline_train.training_options("fn3", {}) and named["sandwich"] is None


def test_the_old_import_paths_hold_the_same_tables():
    from bayes_nest import data
    from bayes_nest.infer import defaults as infer_defaults

    assert infer_defaults.FN3_DEFAULTS is FN3_DEFAULTS
    assert infer_defaults.BNNN_DEFAULTS is BNNN_DEFAULTS
    assert data.SPLIT_DEFAULTS is SPLIT_DEFAULTS


def test_building_the_command_line_loads_no_torch():
    """The parser reads every default from `bayes_nest.defaults`, which imports only the
    standard library: ``bayes-nest --help`` and usage errors stay fast."""
    code = (
        "import sys; from bayes_nest.cli import build_parser; build_parser(); "
        "sys.exit(int('torch' in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ----------------------------------------------------------------------------- every command

COMMAND_SOURCES = {
    ("demo", "out"): lambda: default(demo.run_demo, "out"),
    ("demo", "seed"): lambda: default(demo.run_demo, "seed"),
    ("demo", "quick"): lambda: default(demo.run_demo, "quick"),
    ("demo", "force"): lambda: default(demo.run_demo, "force"),
    ("evaluate", "ood"): lambda: default(workflow.evaluate_config, "ood"),
    ("evaluate", "samples"): lambda: default(workflow.evaluate_config, "num_samples"),
    ("search", "cost"): lambda: default(workflow.search_front, "cost"),
    ("search", "score"): lambda: default(workflow.search_front, "score"),
    ("search", "ece_weight"): lambda: default(workflow.search_front, "ece_weight"),
    ("search", "max_ece"): lambda: default(workflow.search_front, "max_ece"),
    ("search", "samples"): lambda: default(workflow.search_front, "num_samples"),
    ("report", "cost"): lambda: default(workflow.analyse, "cost"),
    ("report", "score"): lambda: default(workflow.analyse, "score"),
    ("report", "ece_weight"): lambda: default(workflow.analyse, "ece_weight"),
    ("report", "max_ece"): lambda: default(workflow.analyse, "max_ece"),
    ("report", "samples"): lambda: default(workflow.analyse, "num_samples"),
    ("export", "onnx"): lambda: default(export_subnet, "onnx"),
    ("fit", "amp"): lambda: default(pipeline.fit, "amp") or None,  # False: none
    ("fit", "checkpoint"): lambda: default(pipeline.fit, "checkpoint_path"),
    ("fit", "resume"): lambda: default(pipeline.fit, "resume"),
}
"""Options of the other commands (and fit's launch options) whose default a library function
also has."""

COMMAND_ONLY = {
    "no_progress": "progress bars are on by default everywhere (progress=True)",
    "threads": "torch's own thread choice unless given",
    "debug": "a command-line matter (tracebacks)",
    "force": "commands never replace files unless told",
    "out": "where the command writes (required)",
    "data": "the data the command reads (required)",
    "checkpoint": "the model file the command reads (required)",
    "checkpoints": "the model files the command reads (required)",
    "config": "an optional file of options",
    "model_option": "extra model keywords, none unless given",
    "label_column": "data loading of a CSV file, as for fit",
    "subnet": "the sub-networks to use, none unless given",
    "front": "a front file, none unless given",
    "budget": "budgets, none unless given",
    "json_out": "an extra output file, none unless given",
    "split": "the command's role: search on validation data, evaluate on test data",
    "device": "the command line trains on CUDA when available (the library on the CPU)",
    "backend": "chosen from the device (nccl on CUDA, gloo on the CPU)",
    "distributed": "automatic under torchrun",
    "budgets": "DEFAULT_BUDGETS, checked below",
}
"""Options without a library counterpart, with the reason."""


def command_options():
    parser = build_parser()
    for command, sub in parser._subparsers._group_actions[0].choices.items():
        for action in sub._actions:
            if action.dest != "help":
                yield command, action.dest, action.default


@pytest.mark.parametrize(
    ("command", "dest", "cli_default"), list(command_options()), ids=lambda v: str(v)
)
def test_every_command_option_defaults_to_the_library(command, dest, cli_default):
    if command == "fit" and dest in opt.FIT_OPTIONS:
        assert cli_default is None  # the default comes later, from the library (see above)
        return
    if (command, dest) in COMMAND_SOURCES:
        assert cli_default == COMMAND_SOURCES[(command, dest)]()
        return
    assert dest in COMMAND_ONLY, (
        f"option {dest!r} of 'bayes-nest {command}' has neither a library source nor a reason "
        "to have none: list it in COMMAND_SOURCES or COMMAND_ONLY"
    )


def test_report_budgets_and_cost_choices_are_the_library_ones():
    assert cli.DEFAULT_BUDGETS.split(",") == list(DEFAULT_BUDGETS) == list(demo.BUDGETS)
    sub = build_parser()._subparsers._group_actions[0].choices["search"]
    (cost,) = [a for a in sub._actions if a.dest == "cost"]
    assert set(cost.choices) == set(COST_METRICS) and cost.default == DEFAULT_COST
