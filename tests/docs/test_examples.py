"""The runnable examples (quick mode) and the README's Python example."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def example(name: str):
    """The ``main`` function of ``examples/<name>.py``."""
    return runpy.run_path(str(ROOT / "examples" / f"{name}.py"), run_name="example")["main"]


def test_fn3_digits_prefixes_beat_random_blocks(capsys):
    rows = example("fn3_digits")(["--quick"])
    assert [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    assert rows[-1]["accuracy"] > 0.9
    # the learned order matters: half the blocks as a prefix beat half the blocks at random
    half = rows[-2]
    assert half["accuracy"] > half["random blocks"]
    assert "blocks per layer" in capsys.readouterr().out


def test_own_data_npz_runs_every_command(tmp_path):
    result = example("own_data_npz")(["--quick", "--workdir", str(tmp_path)])
    rows = result["rows"]
    assert [r["budget"] for r in rows] == ["10%", "30%"]
    assert all(r["accuracy"] > 0.5 for r in rows)  # 4 classes: chance is 0.25
    for name in ("model.ckpt", "front.json", "small.pt", "small.pt2", "small.json"):
        assert (tmp_path / name).is_file()


def test_bnnn_uncertainty(capsys):
    rows = example("bnnn_uncertainty")(["--quick"])
    assert {r["model"] for r in rows} == {"FN3", "BNNN"}
    assert all(0 <= r["ood_auroc"] <= 1 for r in rows)
    assert "90% interval" in capsys.readouterr().out


def test_search_and_export(tmp_path):
    rows = example("search_and_export")(["--quick", "--out", str(tmp_path)])
    assert all(float(r["max |diff|"]) < 1e-5 for r in rows)
    assert len(list(tmp_path.glob("*.pt2"))) == 3


def test_own_network(capsys):
    result = example("own_network")(["--quick"])
    assert result["initial_diff"] < 1e-5  # nest() keeps the plain model's function
    rows = result["rows"]
    assert [r["budget"] for r in rows] == ["10%", "25%", "50%", "100%"]
    assert [r["macs"] for r in rows] == sorted(r["macs"] for r in rows)
    assert all(r["export class"] == "DigitsCNN" for r in rows)
    assert all(float(r["max |export - nested|"]) < 1e-4 for r in rows)
    assert rows[-1]["test acc"] > 0.7  # 10 classes: chance is 0.1
    assert result["bnnn_accuracy"] > 0.7
    assert "activation" in capsys.readouterr().out  # the nest plan's table


@pytest.mark.slow
def test_arviz_posterior(tmp_path):
    pytest.importorskip("arviz")
    idata = example("arviz_posterior")(["--quick", "--plot", str(tmp_path / "keep.png")])
    assert (tmp_path / "keep.png").read_bytes()[:4] == b"\x89PNG"
    assert idata is not None


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    """The README's Python example runs as written (with fewer epochs) from one import."""
    blocks = readme_python_blocks()
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        imports = re.findall(r"^(?:import|from) bayes_nest\b.*$", code, flags=re.M)
        assert imports == ["import bayes_nest as bn"], imports
        assert "epochs=30" in code
        quick = code.replace("epochs=30", "epochs=3")
        exec(compile(quick, "README.md", "exec"), {"__name__": "readme"})
    assert capsys.readouterr().out.strip()
    assert (tmp_path / "small.pt").stat().st_size > 0


def tutorial_blocks(name: str, language: str) -> list[str]:
    text = (ROOT / "docs" / name).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


@pytest.mark.slow
def test_cli_tutorial_commands_run(tmp_path, monkeypatch, capsys):
    """Every ``bayes-nest`` line of docs/tutorials/cli.md, in order, then its Python snippet."""
    import shlex

    from bayes_nest.cli import main

    monkeypatch.chdir(tmp_path)
    for block in tutorial_blocks("tutorials/cli.md", "toml"):
        name = block.splitlines()[0].lstrip("# ").strip()
        (tmp_path / name).write_text(block)
    commands = [
        line
        for block in tutorial_blocks("tutorials/cli.md", "bash")
        for line in block.splitlines()
        if line.startswith("bayes-nest ")
    ]
    assert len(commands) >= 8
    for line in commands:
        assert main([*shlex.split(line)[1:], "--no-progress"]) == 0, line
    for code in tutorial_blocks("tutorials/cli.md", "python"):
        exec(compile(code, "cli.md", "exec"), {"__name__": "tutorial"})
    assert (tmp_path / "report" / "report.md").is_file()
    assert (tmp_path / "small.onnx").is_file()


def test_getting_started_python_is_the_tested_readme_example():
    (guide,) = tutorial_blocks("guide/getting_started.md", "python")
    (readme,) = readme_python_blocks()

    def code(text: str) -> list[str]:  # without comments and blank lines
        return [line.split("#")[0].rstrip() for line in text.splitlines() if line.strip()]

    assert code(guide) == code(readme)


@pytest.mark.slow
def test_segmentation_lesions(tmp_path):
    figure = tmp_path / "lesions.png"
    rows = example("segmentation_lesions")(["--quick", "--figure", str(figure)])["rows"]
    truth, quarter, full = rows
    assert quarter["MACs"] < full["MACs"]
    # fresh annotations from the true distribution are the floor of the GED
    assert truth["GED"] < min(quarter["GED"], full["GED"])
    assert truth["Hungarian IoU"] > max(quarter["Hungarian IoU"], full["Hungarian IoU"])
    assert 0 <= full["pixel ECE"] <= 1
    assert figure.is_file() and figure.stat().st_size > 0
