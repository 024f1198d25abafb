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
from bayes_nest.testing import assert_close
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
    assert_close(rows[0]["accuracy"], expected["accuracy"], dtype=torch.float32)
    assert_close(rows[0]["nll"], expected["nll"], dtype=torch.float32)
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
    # sliced weights vs the nested network's masked ones: other summation orders
    assert_close(torch.softmax(plain(x), -1), expected, scale=10)
    program = torch.export.load(tmp_path / "small.pt2").module()
    assert_close(torch.softmax(program(x), -1), expected, scale=10)
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


@pytest.fixture(scope="module")
def front_json(fn3_ckpt):
    path = fn3_ckpt.parent / "front.json"
    assert (
        main(["search", str(fn3_ckpt), "--data", "digits", "--out", str(path), "--no-progress"])
        == 0
    )
    return path


def test_search_front_scores_are_validation_accuracies(fn3_ckpt, front_json):
    from bayes_nest import metrics
    from bayes_nest.search.front import Front

    front = Front.from_json(front_json)
    model = load_model(fn3_ckpt)
    val = data_for(model, "digits").val
    assert front.metric == "macs" and front.info["score"] == "accuracy"
    assert len(front.points) >= 7  # full, smallest and the greedy path between them
    for point in front.points[:: max(1, len(front.points) // 3)]:
        probs = model.predict(val.x, point.config)
        assert_close(point.score, metrics.accuracy(probs, val.y), dtype=torch.float32)
        assert point.cost == model.cost_model("macs")(point.config)


def test_evaluate_with_front_and_budget_uses_the_best_config(
    fn3_ckpt, front_json, tmp_path, capsys
):
    from bayes_nest.search.front import Front

    out = tmp_path / "m.json"
    code, _, err = run(
        capsys,
        "evaluate",
        fn3_ckpt,
        "--data",
        "digits",
        "--front",
        front_json,
        "--budget",
        "25%",
        "--budget",
        "2000",
        "--json",
        out,
    )
    assert code == 0, err
    rows = json.loads(out.read_text())["rows"]
    model = load_model(fn3_ckpt)
    front = Front.from_json(front_json)
    full = model.cost_model("macs")({})
    assert rows[0]["subnet"] == front.best(0.25 * full).config
    assert rows[1]["subnet"] == front.best(2000).config
    assert rows[1]["macs"] <= 2000


def test_export_from_front_and_report(fn3_ckpt, front_json, tmp_path, capsys):
    code, _, err = run(
        capsys,
        "export",
        fn3_ckpt,
        "--front",
        front_json,
        "--budget",
        "50%",
        "--data",
        "digits",
        "--out",
        tmp_path / "half.pt",
        "--no-progress",
    )
    assert code == 0, err
    info = json.loads((tmp_path / "half.json").read_text())
    assert info["macs"] <= 0.5 * load_model(fn3_ckpt).cost_model("macs")({})
    report = tmp_path / "report"
    code, _, err = run(
        capsys,
        "report",
        fn3_ckpt,
        "--data",
        "digits",
        "--budgets",
        "30%,100%",
        "--out",
        report,
        "--no-progress",
    )
    assert code == 0, err
    text = (report / "report.md").read_text()
    assert text.count("| FN3 |") == 3  # one model row, two budget rows
    for name in ("pareto_front.png", "reliability_fn3.png"):
        assert (report / name).read_bytes().startswith(b"\x89PNG")


def test_demo_writes_report_models_and_exports(tmp_path, capsys, monkeypatch):
    from bayes_nest import demo

    tiny = {"hidden": [32, 32], "groups": 8, "fn3_epochs": 2, "bnnn_epochs": 2}
    monkeypatch.setitem(demo.SETTINGS, "quick", tiny)
    out = tmp_path / "demo"
    code, stdout, err = run(capsys, "demo", "--quick", "--out", out, "--no-progress")
    assert code == 0, err
    for budget in demo.BUDGETS:
        assert f"budget {budget}" in stdout
    assert stdout.count("\nFN3 ") == stdout.count("\nBNNN ") == len(demo.BUDGETS)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    expected = {
        "report.md",
        "pareto_front.png",
        "reliability_fn3.png",
        "reliability_bnnn.png",
        "keep_probabilities.png",
        "models/fn3.ckpt",
        "models/bnnn.ckpt",
        "fronts/fn3.json",
        "fronts/bnnn.json",
        "results.json",
        "export/fn3_subnet.pt",
        "export/fn3_subnet.pt2",
        "export/bnnn_subnet.pt2",
    }
    assert expected <= names
    assert load_model(out / "models" / "bnnn.ckpt").method == "bnnn"
    # a second run may replace the demo's own folder
    code, _, err = run(capsys, "demo", "--quick", "--out", out, "--no-progress")
    assert code == 0, err


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bayes_nest.cli",
            "demo",
            "--quick",
            "--out",
            str(tmp_path / "d"),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "d" / "results.json").read_text())["rows"]
    full = [r for r in rows if r["budget"] == "100%"]
    assert all(r["accuracy"] > 0.85 for r in full)
