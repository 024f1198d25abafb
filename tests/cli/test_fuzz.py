"""Command-line fuzzing: malformed files and arguments get one line on stderr starting with
``bayes-nest: error:``, exit status 2, no traceback, and every file that existed before is left
byte for byte as it was (no file is created either).

Two parts: a table of hand-written malformed inputs (each a parametrized case), and Hypothesis
mutation fuzzing of valid inputs (model files, CSV data, config files, argument lists), where a
mutated input may still be valid (exit 0) but must never crash (exit 1) or print a traceback.
``python -m pytest tests/test_cli_fuzz.py --hypothesis-show-statistics`` reports the counts;
``BAYES_NEST_FUZZ_EXAMPLES=500`` runs a longer hunt with random seeds.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from bayes_nest.cli import main
from bayes_nest.infer.checkpoint import load_checkpoint, save_checkpoint
from bayes_nest.pipeline import CHECKPOINT_KIND

PRECIOUS = b"a file the user already had\n"
TINY = ["--hidden", "8,8", "--groups", "2", "--epochs", "1", "--no-progress"]
EXAMPLES = int(os.environ.get("BAYES_NEST_FUZZ_EXAMPLES", "25"))  # more: a longer random hunt
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="BAYES_NEST_FUZZ_EXAMPLES" not in os.environ,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _arrays(n: int = 90, d: int = 64, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), np.arange(n) % k


def _csv_text(x: np.ndarray, y: np.ndarray) -> str:
    lines = [",".join([*(f"f{i}" for i in range(x.shape[1])), "label"])]
    lines += [
        ",".join([*(f"{v:.4f}" for v in row), str(int(c))]) for row, c in zip(x, y, strict=True)
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace: valid data, trained FN3 and BNNN model files, a front, a training checkpoint
    and a precious file."""
    root = tmp_path_factory.mktemp("fuzz")
    x, y = _arrays()
    np.savez(root / "data.npz", x=x, y=y)
    (root / "data.csv").write_text(_csv_text(x[:, :6], y))
    for method in ("fn3", "bnnn"):
        argv = ["fit", "--data", root / "data.npz", *TINY, "--method", method]
        assert main([str(a) for a in [*argv, "--out", root / f"{method}.model"]]) == 0
    argv = ["search", root / "fn3.model", "--data", root / "data.npz", "--no-progress"]
    assert main([str(a) for a in [*argv, "--out", root / "front.json"]]) == 0
    save_checkpoint(root / "train.ckpt", {"epoch": 1, "model": {}}, kind="fn3")
    (root / "precious.out").write_bytes(PRECIOUS)
    (root / "precious.pt2").write_bytes(PRECIOUS)  # one of the files of an export to precious.pt
    (root / "cases").mkdir()
    return root


def _snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def run_cli(capsys, root: Path, argv: list) -> tuple[int, str, str]:
    """Run ``main`` in-process; return (status, stdout, stderr) and check that no file under
    ``root`` changed, appeared or vanished when the run failed."""
    before = _snapshot(root)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err, err
    assert code in (0, 2), (code, err)  # 1 would be an internal error: a bug
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("bayes-nest: error: "), err
        assert _snapshot(root) == before, "a failed run changed the files"
    return code, out, err


def expect_error(capsys, root: Path, argv: list, *needles: str) -> str:
    code, _, err = run_cli(capsys, root, argv)
    assert code == 2, f"accepted: {argv}"
    for needle in needles:
        assert needle.lower() in err.lower(), (needle, err)
    return err


# ----------------------------------------------------------------------------- malformed files


def _npz(**arrays) -> Callable[[Path], bytes]:
    def make(_: Path) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    return make


def _zip_of_text(_: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("readme.txt", "hello")
    return buffer.getvalue()


X, Y = _arrays()
GARBAGE = bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8))


def _csv(text: str) -> Callable[[Path], bytes]:
    return lambda _: text.encode()


def _valid_csv_lines() -> list[str]:
    return _csv_text(X[:, :4], Y).splitlines()


def _csv_with(row: int, cell: int, value: str) -> Callable[[Path], bytes]:
    lines = _valid_csv_lines()
    cells = lines[row].split(",")
    cells[cell] = value
    lines[row] = ",".join(cells)
    return _csv("\n".join(lines) + "\n")


DATA_FILES = {
    # name: (file suffix, content maker, words the error must contain)
    "empty-npz": (".npz", lambda _: b"", ()),
    "empty-csv": (".csv", lambda _: b"", ("no data",)),
    "garbage-npz": (".npz", lambda _: GARBAGE, ()),
    "garbage-csv": (".csv", lambda _: GARBAGE, ()),
    "truncated-npz": (".npz", lambda _: _npz(x=X, y=Y)(_)[:700], ()),
    "zip-without-arrays": (".npz", _zip_of_text, ("no array 'x'",)),
    "npz-missing-y": (".npz", _npz(x=X), ("no array 'y'",)),
    "npz-object-array": (".npz", _npz(x=np.array([{"a": 1}] * 90, dtype=object), y=Y), ()),
    "npz-text-x": (".npz", _npz(x=np.array([["a"] * 4] * 90), y=Y), ()),
    "npz-complex-x": (".npz", _npz(x=X + 1j, y=Y), ("real",)),
    "npz-1d-x": (".npz", _npz(x=X[:, 0], y=Y), ("shape",)),
    "npz-2d-y": (".npz", _npz(x=X, y=np.stack([Y, Y], 1)), ("shape",)),
    "npz-length-mismatch": (".npz", _npz(x=X, y=Y[:50]), ("90", "50")),
    "npz-no-examples": (".npz", _npz(x=X[:0], y=Y[:0]), ()),
    "npz-nan": (".npz", _npz(x=np.where(np.eye(90, 64) > 0, np.nan, X), y=Y), ("NaN",)),
    "npz-inf": (".npz", _npz(x=np.where(np.eye(90, 64) > 0, -np.inf, X), y=Y), ("infinite",)),
    "npz-fractional-labels": (".npz", _npz(x=X, y=Y + 0.5), ("non-integer",)),
    "npz-nan-labels": (".npz", _npz(x=X, y=np.where(Y == 1, np.nan, Y)), ("NaN",)),
    "npz-negative-labels": (".npz", _npz(x=X, y=Y - 1), ("negative",)),
    "npz-huge-label": (".npz", _npz(x=X, y=np.r_[Y[:-1], 10**9]), ("largest label",)),
    "npz-overflowing-label": (".npz", _npz(x=X, y=np.r_[Y[:-1], 1e30]), ("too large",)),
    "npz-one-class": (".npz", _npz(x=X, y=np.zeros(90, int)), ("2 classes",)),
    "npz-text-labels": (".npz", _npz(x=X, y=np.array(["cat"] * 90)), ()),
    "csv-ragged": (".csv", _csv("\n".join(_valid_csv_lines()[:5]) + "\n1,2\n"), ("columns",)),
    "csv-text-cell": (".csv", _csv_with(3, 1, "hello"), ("non-numeric", "hello")),
    "csv-nan-cell": (".csv", _csv_with(3, 1, "nan"), ("NaN",)),
    "csv-inf-cell": (".csv", _csv_with(4, 2, "-inf"), ("infinite",)),
    "csv-fractional-label": (".csv", _csv_with(2, -1, "1.5"), ("non-integer",)),
    "csv-text-label": (".csv", _csv_with(2, -1, "dog"), ("non-numeric label",)),
    "csv-one-class": (
        ".csv",
        _csv("a,b,label\n" + "".join(f"{i},{i % 3},0\n" for i in range(40))),
        ("2 classes",),
    ),
    "csv-header-only": (".csv", _csv("a,b,label\n"), ("no data rows",)),
    "csv-one-column": (".csv", _csv("1\n2\n3\n"), ("feature column",)),
    "csv-semicolons": (".csv", _csv("1;2;0\n3;4;1\n"), ()),
    "csv-binary-nul": (".csv", _csv("1,2,0\n3,\x00,1\n"), ()),
    "wrong-extension": (".txt", _csv("1,2,0\n"), ("unsupported",)),
}


@pytest.mark.parametrize("name", sorted(DATA_FILES))
def test_malformed_data_file_for_fit(ws, capsys, name):
    suffix, make, needles = DATA_FILES[name]
    path = ws / "cases" / f"{name}{suffix}"
    path.write_bytes(make(ws))
    expect_error(
        capsys,
        ws,
        ["fit", "--data", path, *TINY, "--out", ws / "precious.out", "--force"],
        *needles,
    )


FOR_A_MODEL = sorted(
    n for n in DATA_FILES if n.startswith(("npz", "garbage", "empty")) and n != "npz-one-class"
)  # one class is fine for evaluating a model that knows more


@pytest.mark.parametrize("name", FOR_A_MODEL)
def test_malformed_data_file_for_a_trained_model(ws, capsys, name):
    suffix, make, _ = DATA_FILES[name]
    path = ws / "cases" / f"eval-{name}{suffix}"
    path.write_bytes(make(ws))
    argv = ["evaluate", ws / "fn3.model", "--data", path, "--split", "all"]
    expect_error(capsys, ws, [*argv, "--json", ws / "precious.out", "--force"], path.name)


@pytest.mark.parametrize("data", ["cases/folder.npz", "cases/missing.npz", "cifar100", ""])
def test_data_paths_that_are_not_files(ws, capsys, data):
    (ws / "cases" / "folder.npz").mkdir(exist_ok=True)
    data = ws / data if data.startswith("cases") else data
    expect_error(capsys, ws, ["fit", "--data", data, *TINY, "--out", ws / "cases" / "m"])


@pytest.mark.parametrize(
    "name, x, y, needles",
    [("narrow", X[:, :10], Y, ("(10,)", "(64,)")), ("more-classes", X, np.arange(90) % 5, ())],
)
def test_wrong_shapes_and_classes_for_a_trained_model(ws, capsys, name, x, y, needles):
    path = ws / "cases" / f"{name}.npz"
    path.write_bytes(_npz(x=x, y=y)(ws))
    argv = ["evaluate", ws / "fn3.model", "--data", path, "--split", "all"]
    expect_error(capsys, ws, argv, *needles)


# ----------------------------------------------------------------------------- model files


def _resigned(ws: Path, change: Callable[[dict], None]) -> bytes:
    """The FN3 model file with its payload changed and correctly signed again: passes the
    integrity checks, so the loader itself must notice."""
    payload = load_checkpoint(ws / "fn3.model", kind=CHECKPOINT_KIND)
    change(payload)
    path = ws / "cases" / ".resign"
    save_checkpoint(path, payload, kind=CHECKPOINT_KIND)
    data = path.read_bytes()
    path.unlink()
    return data


def _flip(offset_from: str, where: float) -> Callable[[Path], bytes]:
    def make(ws: Path) -> bytes:
        data = bytearray((ws / f"{offset_from}.model").read_bytes())
        data[int(where * (len(data) - 1))] ^= 0x20
        return bytes(data)

    return make


def _torch_pickle(_: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save({"state": torch.zeros(3)}, buffer)
    return buffer.getvalue()


def _pop(key):
    return lambda p: p.pop(key)


def _set(key, value):
    return lambda p: p.__setitem__(key, value)


MODEL_FILES = {
    "empty": (lambda _: b"", ("not a bayes_nest checkpoint",)),
    "garbage": (lambda _: GARBAGE, ("not a bayes_nest checkpoint",)),
    "torch-pickle": (_torch_pickle, ("not a bayes_nest checkpoint",)),
    "header-only": (lambda ws: (ws / "fn3.model").read_bytes()[:12], ("truncated",)),
    "no-metadata-end": (lambda ws: (ws / "fn3.model").read_bytes()[:60], ("truncated",)),
    "truncated-half": (lambda ws: (ws / "fn3.model").read_bytes()[:-4000], ("truncated",)),
    "truncated-last-byte": (lambda ws: (ws / "fn3.model").read_bytes()[:-1], ("truncated",)),
    "appended": (lambda ws: (ws / "fn3.model").read_bytes() + b"\0", ("SHA-256",)),
    "flip-metadata": (_flip("fn3", 0.002), ()),
    "flip-payload-fn3": (_flip("fn3", 0.6), ("SHA-256",)),
    "flip-payload-bnnn": (_flip("bnnn", 0.9), ("SHA-256",)),
    "training-checkpoint": (lambda ws: (ws / "train.ckpt").read_bytes(), ("'fn3' checkpoint",)),
    "resigned-missing-state": (lambda ws: _resigned(ws, _pop("state")), ("usable",)),
    "resigned-missing-spec": (lambda ws: _resigned(ws, _pop("spec")), ("usable",)),
    "resigned-unknown-model": (
        lambda ws: _resigned(ws, _set("spec", {"name": "transformer", "options": {}})),
        ("transformer",),
    ),
    "resigned-bad-options": (
        lambda ws: _resigned(ws, _set("spec", {"name": "mlp", "options": {"hidden": [7]}})),
        ("usable",),
    ),
    "resigned-other-shape": (lambda ws: _resigned(ws, _set("input_shape", [10])), ("usable",)),
    "resigned-unknown-method": (lambda ws: _resigned(ws, _set("method", "mcmc")), ("mcmc",)),
    "resigned-newer-format": (lambda ws: _resigned(ws, _set("format", 99)), ("newer",)),
    "resigned-negative-classes": (lambda ws: _resigned(ws, _set("num_classes", -3)), ()),
    "resigned-text-shape": (lambda ws: _resigned(ws, _set("input_shape", "64")), ()),
}

COMMANDS = {
    "evaluate": lambda ws, m: ["evaluate", m, "--data", ws / "data.npz", "--no-progress"],
    "search": lambda ws, m: [
        "search",
        m,
        "--data",
        ws / "data.npz",
        "--out",
        ws / "precious.out",
        "--force",
    ],
    "export": lambda ws, m: ["export", m, "--out", ws / "cases" / "never.pt", "--no-progress"],
    "report": lambda ws, m: ["report", m, "--data", ws / "data.npz", "--out", ws / "cases" / "r"],
    "fit-init": lambda ws, m: [
        "fit",
        "--data",
        ws / "data.npz",
        *TINY,
        "--init-from",
        m,
        "--out",
        ws / "cases" / "x",
    ],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("name", sorted(MODEL_FILES))
def test_malformed_model_file(ws, capsys, name, command):
    make, needles = MODEL_FILES[name]
    path = ws / "cases" / f"{name}.model"
    if not path.exists():
        path.write_bytes(make(ws))
    err = expect_error(capsys, ws, COMMANDS[command](ws, path), *needles)
    assert path.name in err  # the message names the file


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("path", ["cases", "cases/none.model"])
def test_model_path_that_is_a_folder_or_missing(ws, capsys, path, command):
    expect_error(capsys, ws, COMMANDS[command](ws, ws / path))


# ----------------------------------------------------------------------------- config files

CONFIGS = {
    # name: (file name, text, words the error must contain)
    "yaml-syntax": ("a.yaml", "data: [digits\nepochs: 3\n", ("not valid YAML",)),
    "yaml-tabs": ("b.yaml", "data: digits\n\tepochs: 3\n", ("not valid YAML",)),
    "yaml-python-tag": ("c.yaml", "data: !!python/object/apply:os.getcwd []\n", ("YAML",)),
    "yaml-list": ("d.yaml", "- data\n- digits\n", ("mapping",)),
    "yaml-empty": ("e.yaml", "", ("mapping",)),
    "yaml-scalar": ("f.yaml", "42\n", ("mapping",)),
    "yaml-unknown-key": ("g.yaml", "data: digits\nepoch: 3\n", ("unknown option 'epoch'",)),
    "yaml-unknown-model-key": (
        "h.yaml",
        "data: DATA\nmodel: {name: mlp, widht: 3}\n",
        ("widht",),
    ),
    "yaml-epochs-text": ("i.yaml", "data: digits\nepochs: many\n", ("'epochs'", "integer")),
    "yaml-epochs-negative": ("j.yaml", "data: digits\nepochs: -2\n", ("'epochs'", "positive")),
    "yaml-epochs-fraction": ("k.yaml", "data: digits\nepochs: 1.5\n", ("'epochs'",)),
    "yaml-epochs-bool": ("l.yaml", "data: digits\nepochs: true\n", ("'epochs'",)),
    "yaml-keep-prob": ("m.yaml", "data: digits\nkeep_prob: 1.0\n", ("'keep_prob'",)),
    "yaml-lr-nan": ("n.yaml", "data: digits\nlr: .nan\n", ("'lr'", "finite")),
    "yaml-hidden-zero": ("o.yaml", "data: digits\nhidden: [16, 0]\n", ("'hidden'",)),
    "yaml-hidden-nested": ("p.yaml", "data: digits\nhidden: [[16]]\n", ("'hidden'",)),
    "yaml-method": ("q.yaml", "data: digits\nmethod: mcmc\n", ("'method'",)),
    "yaml-model-list": ("r.yaml", "data: digits\nmodel: [mlp]\n", ("'model'",)),
    "yaml-binary": ("s.yaml", GARBAGE.decode("latin-1"), ("YAML",)),
    "toml-syntax": ("a.toml", "epochs = = 3\n", ("not valid TOML",)),
    "toml-unknown-key": ("b.toml", 'data = "digits"\nepoch = 3\n', ("unknown option",)),
    "toml-empty": ("c.toml", "", ("no training data",)),
    "toml-table": ("d.toml", '[train]\nepochs = 3\ndata = "digits"\n', ("unknown option",)),
    "json-syntax": ("a.json", '{"data": "digits",', ("not valid JSON",)),
    "json-null-byte": ("b.json", '{"data": "\x00"}', ()),
    "json-list": ("c.json", '["data"]', ("mapping",)),
    "json-nan": ("d.json", '{"data": "digits", "lr": NaN}', ("'lr'",)),
    "ini-extension": ("a.ini", "[fit]\nepochs=3\n", (".toml",)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_malformed_config_file(ws, capsys, name):
    filename, text, needles = CONFIGS[name]
    path = ws / "cases" / filename
    path.write_bytes(text.replace("DATA", str(ws / "data.npz")).encode("utf-8", "surrogateescape"))
    argv = ["fit", "--config", path, "--no-progress", "--out", ws / "precious.out", "--force"]
    expect_error(capsys, ws, argv, *needles)


def test_missing_config_file(ws, capsys):
    argv = ["fit", "--config", ws / "cases" / "none.toml", "--out", ws / "cases" / "m"]
    expect_error(capsys, ws, argv, "none.toml", "does not exist")


# ----------------------------------------------------------------------------- arguments

FIT_ARGS = {
    "epochs-negative": (["--epochs", "-1"], ("--epochs",)),
    "epochs-zero": (["--epochs", "0"], ("--epochs",)),
    "epochs-text": (["--epochs", "ten"], ("--epochs",)),
    "epochs-float": (["--epochs", "1.5"], ("--epochs",)),
    "epochs-exponent": (["--epochs", "1e3"], ("--epochs",)),
    "model-unknown": (["--model", "transformer"], ("--model",)),
    "method-unknown": (["--method", "mcmc"], ("--method",)),
    "hidden-empty": (["--hidden", ""], ("--hidden",)),
    "hidden-zero": (["--hidden", "16,0"], ("--hidden",)),
    "hidden-text": (["--hidden", "a,b"], ("--hidden",)),
    "hidden-trailing-comma": (["--hidden", "16,"], ("--hidden",)),
    "hidden-not-divisible": (["--hidden", "9", "--groups", "2"], ("divisible",)),
    "groups-zero": (["--groups", "0"], ("--groups",)),
    "groups-more-than-width": (["--hidden", "4", "--groups", "8"], ()),
    "always-on-over-groups": (["--always-on", "5"], ()),
    "keep-prob-zero": (["--keep-prob", "0"], ("--keep-prob",)),
    "keep-prob-one": (["--keep-prob", "1"], ("--keep-prob",)),
    "keep-prob-nan": (["--keep-prob", "nan"], ("--keep-prob",)),
    "lr-negative": (["--lr", "-0.1"], ("--lr",)),
    "lr-inf": (["--lr", "inf"], ("--lr",)),
    "batch-size-zero": (["--batch-size", "0"], ("--batch-size",)),
    "temperature-zero": (["--method", "bnnn", "--temperature", "0"], ("--temperature",)),
    "temperature-for-fn3": (["--temperature", "0.5"], ("temperature", "fn3")),
    "kl-scale-for-fn3": (["--kl-scale", "0.5"], ("kl_scale",)),
    "threads-zero": (["--threads", "0"], ("--threads",)),
    "seed-text": (["--seed", "x"], ("--seed",)),
    "bits-zero": (["--bits", "0"], ("--bits",)),
    "val-fraction-one": (["--val-fraction", "1"], ("--val-fraction",)),
    "test-fraction-negative": (["--test-fraction", "-0.1"], ("--test-fraction",)),
    "fractions-leave-nothing": (["--val-fraction", "0.5", "--test-fraction", "0.5"], ()),
    "convnet-on-flat-data": (["--model", "convnet", "--hidden", "8"], ("image",)),
    "model-option-unknown": (["--model-option", "depth=3"], ("depth",)),
    "model-option-no-value": (["--model-option", "norm"], ("KEY=VALUE",)),
    "unknown-flag": (["--frobnicate"], ("--frobnicate",)),
    "label-column-for-npz-out-of-range": (["--label-column", "99"], ()),
}


@pytest.mark.parametrize("name", sorted(FIT_ARGS))
def test_malformed_fit_arguments(ws, capsys, name):
    extra, needles = FIT_ARGS[name]
    data = ws / ("data.csv" if "label-column" in name else "data.npz")
    argv = ["fit", "--data", data, *TINY, *extra, "--out", ws / "precious.out", "--force"]
    expect_error(capsys, ws, argv, *needles)


def _front_file(ws: Path, name: str, content: object) -> Path:
    path = ws / "cases" / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


FRONTS = {
    "not-json": "{not json",
    "empty-object": {},
    "list": [1, 2],
    "no-points": {"metric": "macs", "points": []},
    "point-without-score": {"metric": "macs", "points": [{"config": {}, "cost": 1}]},
    "nan-score": {"metric": "macs", "points": [{"config": {}, "score": "NaN", "cost": 1.0}]},
    "text-cost": {"metric": "macs", "points": [{"config": {}, "score": 0.5, "cost": "x"}]},
    "foreign-axes": {
        "metric": "macs",
        "points": [{"config": {"stages.0": 1}, "score": 0.9, "cost": 10.0}],
    },
    "out-of-range-count": {
        "metric": "macs",
        "points": [{"config": {"hidden.0": 99}, "score": 0.9, "cost": 10.0}],
    },
}

SELECTIONS = {
    "subnet-unknown-axis": (["--subnet", "hidden.7=1"], ("unknown axis", "hidden.7")),
    "subnet-out-of-range": (["--subnet", "hidden.0=99"], ("hidden.0", "99")),
    "subnet-negative": (["--subnet", "hidden.0=-1"], ("--subnet",)),
    "subnet-text": (["--subnet", "hidden.0=two"], ("--subnet",)),
    "subnet-no-count": (["--subnet", "hidden.0"], ("AXIS=COUNT",)),
    "subnet-empty": (["--subnet", ""], ("--subnet",)),
    "subnet-bad-json": (["--subnet", "{hidden.0: 1"], ("JSON",)),
    "subnet-json-list": (["--subnet", "[1, 2]"], ("--subnet",)),
    "subnet-missing-json-file": (["--subnet", "none.json"], ("does not exist",)),
    "subnet-and-front": (["--subnet", "hidden.0=1", "--front", "FRONT", "--budget", "50%"], ()),
    "budget-without-front": (["--budget", "50%"], ("--front",)),
    "front-without-budget": (["--front", "FRONT"], ("--budget",)),
    "budget-infeasible": (["--front", "FRONT", "--budget", "1"], ("no sub-network fits",)),
    "budget-text": (["--front", "FRONT", "--budget", "lots"], ("--budget",)),
    "budget-negative": (["--front", "FRONT", "--budget", "-5"], ("--budget",)),
    "budget-zero-share": (["--front", "FRONT", "--budget", "0%"], ("--budget",)),
    "budget-over-full": (["--front", "FRONT", "--budget", "150%"], ("--budget",)),
    "budget-nan": (["--front", "FRONT", "--budget", "nan"], ("--budget",)),
    "front-missing": (["--front", "none-front.json", "--budget", "50%"], ()),
    **{f"front-{k}": (["--front", f"FRONT:{k}", "--budget", "50%"], ()) for k in FRONTS},
}


def _selection_argv(ws: Path, extra: list[str]) -> list:
    out = []
    for a in extra:
        if a == "FRONT":
            out.append(ws / "front.json")
        elif a.startswith("FRONT:"):
            key = a.split(":", 1)[1]
            out.append(_front_file(ws, f"front-{key}.json", FRONTS[key]))
        elif a.endswith(".json") and not a.startswith(("{", "[")):
            out.append(ws / "cases" / a)
        else:
            out.append(a)
    return out


@pytest.mark.parametrize("command", ["evaluate", "export"])
@pytest.mark.parametrize("name", sorted(SELECTIONS))
def test_malformed_selection(ws, capsys, name, command):
    extra, needles = SELECTIONS[name]
    if command == "evaluate":
        argv = ["evaluate", ws / "fn3.model", "--data", ws / "data.npz"]
        argv += ["--json", ws / "precious.out", "--force"]
    else:
        out = ws / "cases" / f"export-{name}.pt"
        argv = ["export", ws / "fn3.model", "--out", out, "--no-progress"]
    expect_error(capsys, ws, [*argv, *_selection_argv(ws, extra)], *needles)


OTHER_ARGS = {
    "unknown-command": (["frobnicate"], ("invalid choice",)),
    "no-out-for-fit": (["fit", "--data", "DATA"], ("--out",)),
    "no-data-for-fit": (["fit", "--out", "NEW"], ("--data",)),
    "search-cost": (["search", "MODEL", "--data", "DATA", "--cost", "flops", "--out", "NEW"], ()),
    "search-score": (["search", "MODEL", "--data", "DATA", "--score", "f1", "--out", "NEW"], ()),
    "search-ece-weight": (
        ["search", "MODEL", "--data", "DATA", "--ece-weight", "-1", "--out", "NEW"],
        ("--ece-weight",),
    ),
    "search-existing-out": (
        ["search", "MODEL", "--data", "DATA", "--out", "PRECIOUS"],
        ("exists", "--force"),
    ),
    "evaluate-samples-zero": (["evaluate", "MODEL", "--data", "DATA", "--samples", "0"], ()),
    "evaluate-split": (["evaluate", "MODEL", "--data", "DATA", "--split", "dev"], ("--split",)),
    "evaluate-ood": (["evaluate", "MODEL", "--data", "DATA", "--ood", "rain"], ("--ood",)),
    "evaluate-existing-json": (
        ["evaluate", "MODEL", "--data", "DATA", "--json", "PRECIOUS"],
        ("exists",),
    ),
    "evaluate-label-column-npz": (
        ["evaluate", "MODEL", "--data", "CSV", "--label-column", "nope", "--split", "all"],
        ("nope",),
    ),
    "export-existing-out": (["export", "MODEL", "--out", "PRECIOUS_PT"], ("exists",)),
    "report-budgets-empty": (
        ["report", "MODEL", "--data", "DATA", "--budgets", "", "--out", "NEWDIR"],
        ("--budgets",),
    ),
    "report-budgets-gap": (
        ["report", "MODEL", "--data", "DATA", "--budgets", "10%,,50%", "--out", "NEWDIR"],
        ("--budgets",),
    ),
    "report-existing-folder": (["report", "MODEL", "--data", "DATA", "--out", "CASES"], ()),
    "demo-existing-folder": (["demo", "--quick", "--out", "CASES"], ("--force",)),
    "demo-seed": (["demo", "--seed", "zero", "--out", "NEWDIR"], ("--seed",)),
}


@pytest.mark.parametrize("name", sorted(OTHER_ARGS))
def test_malformed_other_arguments(ws, capsys, name):
    extra, needles = OTHER_ARGS[name]
    names = {
        "MODEL": ws / "fn3.model",
        "DATA": ws / "data.npz",
        "CSV": ws / "data.csv",
        "PRECIOUS": ws / "precious.out",
        "PRECIOUS_PT": ws / "precious.pt",
        "NEW": ws / "cases" / "new.json",
        "NEWDIR": ws / "cases" / "newdir",
        "CASES": ws / "cases",
    }
    expect_error(capsys, ws, [names.get(a, a) for a in extra], *needles)


# ----------------------------------------------------------------------------- mutation fuzzing


@st.composite
def mutations(draw, data: bytes) -> bytes:
    """``data`` with 1-3 random edits: flipped bits, truncation, inserted or deleted bytes."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]))
        i = draw(st.integers(0, max(len(out) - 1, 0)))
        if kind == "flip" and out:
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del out[i:]
        elif kind == "insert":
            out[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[i : i + draw(st.integers(1, 64))]
        else:
            j = draw(st.integers(i, min(len(out), i + 64)))
            out[i:i] = out[i:j]
    return bytes(out)


@FUZZ
@given(data=st.data())
def test_mutated_model_files_are_refused(ws, capsys, data):
    original = (ws / "fn3.model").read_bytes()
    mutated = data.draw(mutations(original))
    assume(mutated != original)
    path = ws / "cases" / "mutated.model"
    path.write_bytes(mutated)
    argv = ["evaluate", path, "--data", ws / "data.npz", "--json", ws / "precious.out", "--force"]
    expect_error(capsys, ws, argv, "mutated.model")
    event("refused")


@FUZZ
@given(data=st.data())
def test_mutated_csv_data_never_crash(ws, capsys, data):
    mutated = data.draw(mutations((ws / "data.csv").read_bytes()))
    path = ws / "cases" / "mutated.csv"
    path.write_bytes(mutated)
    out = ws / "cases" / "mutated-out.model"
    if out.exists():
        out.unlink()
    code, _, _ = run_cli(
        capsys, ws, ["fit", "--data", path, "--hidden", "4", *TINY[2:], "--out", out]
    )
    event(f"exit {code}")


CONFIG_TEXT = "data: {data}\nmethod: fn3\nepochs: 1\nhidden: [4]\ngroups: 2\nkeep_prob: 0.9\n"


@FUZZ
@given(data=st.data())
def test_mutated_config_files_never_crash(ws, capsys, data):
    text = CONFIG_TEXT.format(data=ws / "data.npz").encode()
    suffix = data.draw(st.sampled_from([".yaml", ".json", ".toml"]))
    if suffix == ".json":
        text = json.dumps(
            {"data": str(ws / "data.npz"), "epochs": 1, "hidden": [4], "groups": 2}
        ).encode()
    elif suffix == ".toml":
        text = f'data = "{ws / "data.npz"}"\nepochs = 1\nhidden = [4]\ngroups = 2\n'.encode()
    path = ws / "cases" / f"mutated{suffix}"
    path.write_bytes(data.draw(mutations(text)))
    out = ws / "cases" / "mutated-config.model"
    if out.exists():
        out.unlink()
    code, _, _ = run_cli(capsys, ws, ["fit", "--config", path, "--no-progress", "--out", out])
    event(f"{suffix} exit {code}")


TOKENS = [
    "--epochs", "--hidden", "--groups", "--keep-prob", "--lr", "--subnet", "--budget",
    "--front", "--split", "--samples", "--cost", "--score", "--method", "--model", "--seed",
    "0", "1", "-1", "2", "8", "0.5", "1e9", "nan", "inf", "-inf", "50%", "", "x", "hidden.0=1",
    "hidden.9=1", "all", "val", "macs", "bnnn", "fn3", "mlp", "resnet", "=", "--", "-",
]  # fmt: skip


@FUZZ
@given(command=st.sampled_from(["fit", "evaluate", "search", "export"]), tokens=st.lists(
    st.sampled_from(TOKENS), max_size=6))  # fmt: skip
def test_random_argument_lists_never_crash(ws, capsys, command, tokens):
    out = ws / "cases" / f"random-{command}.out"
    for p in (out, out.with_suffix(".pt2"), out.with_suffix(".onnx")):
        if p.exists():
            p.unlink()
    base = {
        "fit": ["fit", "--data", ws / "data.npz", "--epochs", "1", "--hidden", "4", "--groups",
                "2"],
        "evaluate": ["evaluate", ws / "fn3.model", "--data", ws / "data.npz"],
        "search": ["search", ws / "fn3.model", "--data", ws / "data.npz"],
        "export": ["export", ws / "fn3.model"],
    }[command]  # fmt: skip
    argv = [*base, *tokens, "--no-progress"]
    if command != "evaluate":
        argv += ["--out", out.with_suffix(".pt") if command == "export" else out]
    code, _, _ = run_cli(capsys, ws, argv)
    event(f"{command} exit {code}")
