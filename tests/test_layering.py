"""The package layout: old module paths re-export the very objects of `bayes_nest.app`, the
package root offers the main job from one import, and the import-linter contracts of
``pyproject.toml`` hold on the tree (and break when a lower layer imports upward or a cycle
appears)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bayes_nest as bn
from bayes_nest import app

ROOT = Path(__file__).resolve().parents[1]

# old path -> the modules its names now live in
MOVED = {
    "bayes_nest.pipeline": ("app.fitting", "app.model_file", "app.spec", "app.train"),
    "bayes_nest.workflow": (
        "app.budgets",
        "app.contexts",
        "app.data",
        "app.evaluation",
        "app.front",
        "defaults",
    ),
    "bayes_nest.report": ("app.budgets", "app.report", "app.tables"),
    "bayes_nest.outputs": ("app.outputs",),
    "bayes_nest.demo": ("app.demo",),
    "bayes_nest.pipeline_segmentation": ("app.segmentation",),
    "bayes_nest.pipeline_train": ("app.train",),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_re_export_the_same_objects(old):
    module = importlib.import_module(old)
    homes = [importlib.import_module(f"bayes_nest.{name}") for name in MOVED[old]]
    assert module.__all__, old
    for name in module.__all__:
        value = getattr(module, name)
        owners = [home for home in homes if name in getattr(home, "__all__", ())]
        assert len(owners) == 1, f"{old}.{name} is exported by {[h.__name__ for h in owners]}"
        assert value is getattr(owners[0], name), f"{old}.{name} is a copy, not the object"


def test_the_main_names_of_the_old_paths():
    from bayes_nest import pipeline, workflow

    assert pipeline.fit is app.fitting.fit is bn.fit
    assert pipeline.ModelSpec is app.spec.ModelSpec is bn.ModelSpec
    assert pipeline.load_model is app.model_file.load_model is bn.load_model
    assert workflow.search_front is app.front.search_front is bn.search_front
    assert workflow.evaluate_config is app.evaluation.evaluate_config is bn.evaluate_config


@pytest.mark.parametrize("name", sorted(app.__all__))
def test_the_package_root_offers_the_app(name):
    assert getattr(bn, name) is getattr(app, name)
    assert name in dir(bn)


def test_the_package_root_offers_data_and_subpackages():
    from bayes_nest.data import load_dataset
    from bayes_nest.subnet import export

    assert bn.load_dataset is load_dataset
    assert bn.subnet.export is export
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        bn.not_a_name  # noqa: B018


def test_importing_the_package_or_the_command_does_not_import_torch():
    code = (
        "import sys, bayes_nest, bayes_nest.cli; "
        "assert callable(bayes_nest.cli.main); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_env(ROOT)
    )
    assert out.stdout.strip() == "False"


def test_the_console_script_entry_is_the_cli_main():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    from bayes_nest.cli import main

    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, attr = target["bayes-nest"].split(":")
    assert getattr(importlib.import_module(module), attr) is main


def test_benchmark_helpers_are_not_installed():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("bayes_nest._bench")
    assert (ROOT / "benchmarks" / "_bench.py").is_file()


# ----------------------------------------------------------------------------- contracts


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root)}


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not os.path.exists(exe):
        pytest.skip("import-linter is not installed (pip install import-linter)")
    return subprocess.run(
        [exe, "--no-cache"], cwd=root, capture_output=True, text=True, env=_env(root)
    )


def test_the_layering_contracts_hold():
    result = _lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def _tree_with(tmp_path: Path, module: str, line: str) -> Path:
    """A copy of the package and its contracts with ``line`` appended to ``module``."""
    shutil.copytree(ROOT / "bayes_nest", tmp_path / "bayes_nest")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / module
    path.write_text(path.read_text() + f"\n{line}\n")
    return tmp_path


def test_an_upward_import_breaks_the_layers_contract(tmp_path):
    root = _tree_with(tmp_path, "bayes_nest/infer/evaluate.py", "from ..app import fit")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "cli above app above the library; the library in layers BROKEN" in result.stdout
    assert "bayes_nest.infer.evaluate -> bayes_nest.app" in result.stdout


def test_an_import_cycle_breaks_the_acyclic_contract(tmp_path):
    root = _tree_with(tmp_path, "bayes_nest/subnet/_exporters.py", "from .export import export")
    result = _lint_imports(root)
    assert result.returncode != 0
    assert "cli above app above the library; the library in layers KEPT" in result.stdout
    assert "No cycles are allowed in bayes_nest.subnet" in result.stdout
