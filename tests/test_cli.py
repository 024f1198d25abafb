"""The ``bayes-nest`` command on tiny data: every subcommand runs, writes what it says, and
its outputs agree with the Python API."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from bayes_nest.cli import build_parser, main
from bayes_nest.pipeline import load_model
from bayes_nest.workflow import data_for, evaluate_config

TINY = ["--hidden", "16,16", "--groups", "4", "--epochs", "2", "--no-progress"]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def fn3_ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "fn3.ckpt"
    assert main(["fit", "--data", "digits", *TINY, "--out", str(path)]) == 0
    return path


def test_fit_writes_a_model_that_loads(fn3_ckpt):
    model = load_model(fn3_ckpt)
    assert model.method == "fn3" and model.spec.name == "mlp"
    assert model.spec.options == {"hidden": [16, 16], "groups": 4}
    assert model.input_shape == (64,) and model.num_classes == 10
    assert len(model.history["epoch"]) == 2


def test_fit_from_npz_and_csv_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + 2 * (x[:, 1] > 0)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",")
    for name in ("d.npz", "d.csv"):
        out = tmp_path / f"{name}.ckpt"
        code, stdout, _ = run(capsys, "fit", "--data", tmp_path / name, *TINY, "--out", out)
        assert code == 0, stdout
        model = load_model(out)
        assert model.input_shape == (6,) and model.num_classes == 4
        # stored standardization = statistics of the training split of the file
        data = data_for(model, tmp_path / name)
        assert abs(float(data.train.x.mean())) < 1e-5


def test_fit_config_file_and_command_line_override(tmp_path, capsys):
    (tmp_path / "fit.toml").write_text(
        'data = "digits"\nepochs = 1\nkeep_prob = 0.8\n[model]\nname = "mlp"\nhidden = [8]\n'
        "groups = 2\n"
    )
    (tmp_path / "fit.yaml").write_text(
        "data: digits\nepochs: 1\nmodel: mlp\nhidden: 8\ngroups: 4\n"
    )
    out = tmp_path / "a.ckpt"
    code, _, err = run(
        capsys,
        "fit",
        "--config",
        tmp_path / "fit.toml",
        "--epochs",
        "2",
        "--no-progress",
        "--out",
        out,
    )
    assert code == 0, err
    model = load_model(out)
    assert model.options["epochs"] == 2 and model.options["keep_prob"] == 0.8
    assert model.spec.options == {"hidden": [8], "groups": 2}
    code, _, err = run(
        capsys,
        "fit",
        "--config",
        tmp_path / "fit.yaml",
        "--no-progress",
        "--out",
        tmp_path / "b.ckpt",
    )
    assert code == 0, err
    assert load_model(tmp_path / "b.ckpt").spec.options == {"hidden": [8], "groups": 4}


def test_evaluate_matches_the_python_api(fn3_ckpt, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    code, stdout, err = run(
        capsys,
        "evaluate",
        fn3_ckpt,
        "--data",
        "digits",
        "--subnet",
        "hidden.0=2,hidden.1=3",
        "--subnet",
        '{"hidden.0": 4}',
        "--json",
        out,
    )
    assert code == 0, err
    assert "hidden.0=2/4 hidden.1=3/4" in stdout and "full" in stdout
    rows = json.loads(out.read_text())["rows"]
    model = load_model(fn3_ckpt)
    expected = evaluate_config(
        model, data_for(model, "digits").test, {"hidden.0": 2, "hidden.1": 3}
    )
    assert rows[0]["accuracy"] == pytest.approx(expected["accuracy"])
    assert rows[0]["nll"] == pytest.approx(expected["nll"])
    assert rows[0]["macs"] == 64 * 8 + 8 * 12 + 12 * 10
    assert rows[1]["subnet"] == {"hidden.0": 4, "hidden.1": 4}


def test_export_writes_equivalent_standalone_files(fn3_ckpt, tmp_path, capsys):
    out = tmp_path / "small.pt"
    code, _, err = run(
        capsys, "export", fn3_ckpt, "--subnet", "hidden.0=2", "--out", out, "--no-progress"
    )
    assert code == 0, err
    model = load_model(fn3_ckpt)
    x = data_for(model, "digits").test.x[:20]
    expected = model.predict(x, {"hidden.0": 2})[0]
    plain = torch.load(out, weights_only=False)
    assert torch.allclose(torch.softmax(plain(x), -1), expected, atol=1e-5)
    program = torch.export.load(tmp_path / "small.pt2").module()
    assert torch.allclose(torch.softmax(program(x), -1), expected, atol=1e-5)
    info = json.loads((tmp_path / "small.json").read_text())
    assert info["config"] == {"hidden.0": 2, "hidden.1": 4} and info["input_shape"] == [64]


@pytest.mark.parametrize("command", ["demo", "fit", "evaluate", "search", "export", "report"])
def test_help_of_every_subcommand_shows_an_example(command, capsys):
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    assert "example:" in out and f"bayes-nest {command}" in out


def test_every_subcommand_is_registered():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "fit", "evaluate", "search", "export", "report"}


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "bayes_nest.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.startswith("bayes_nest ")
