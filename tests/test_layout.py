"""The layout of ``tests/``: packages mirroring ``bayes_nest/``, file names without their folder's
prefix, and shared fixtures defined once (in ``tests/conftest.py``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
PACKAGE = TESTS.parent / "bayes_nest"

NOT_IN_THE_PACKAGE = {
    "app": "the application layer (model spec, fit facade, model files, evaluation, report)",
    "cli": "the bayes-nest command",
    "benchmarks": "the scripts in benchmarks/",
    "property": "property-based tests that cut across packages",
    "docs": "docs pages, runnable examples and the doctest setup",
}
"""Top-level test folders allowed without a ``bayes_nest/<folder>`` package, and why."""

ABBREVIATIONS = {"distributions": "dist", "property": "prop", "benchmarks": "bench"}
"""Short forms of folder names that older file names used as prefixes."""


def _test_folders() -> list[Path]:
    """Every folder under ``tests/`` holding Python files (caches excluded)."""
    folders = {p.parent for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(folders - {TESTS})


def _test_modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if "__pycache__" not in p.parts)


def _is_fixture(decorator: ast.expr) -> bool:
    """``@pytest.fixture``, ``@pytest.fixture(...)``, ``@fixture`` or ``@fixture(...)``."""
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    if isinstance(target, ast.Attribute):
        return target.attr == "fixture"
    return isinstance(target, ast.Name) and target.id == "fixture"


def fixtures(source: str) -> dict[str, ast.FunctionDef | ast.AsyncFunctionDef]:
    """The fixture functions a module's source defines, by fixture name (the ``name=`` of the
    decorator when given, else the function's name)."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for decorator in node.decorator_list:
            if not _is_fixture(decorator):
                continue
            name = node.name
            if isinstance(decorator, ast.Call):
                for keyword in decorator.keywords:
                    if keyword.arg == "name" and isinstance(keyword.value, ast.Constant):
                        name = keyword.value.value
            found[name] = node
    return found


def clears_param_store(function: ast.AST) -> bool:
    """Whether ``function`` empties Pyro's global parameter store: ``pyro.clear_param_store()``,
    a bare ``clear_param_store()`` or ``pyro.get_param_store().clear()``."""
    for node in ast.walk(function):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "clear_param_store":
            return True
        if isinstance(func, ast.Attribute) and func.attr == "clear_param_store":
            owner = func.value
            if isinstance(owner, ast.Name) and owner.id == "pyro":
                return True
        if isinstance(func, ast.Attribute) and func.attr == "clear":
            owner = func.value
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Attribute | ast.Name):
                called = owner.func.attr if isinstance(owner.func, ast.Attribute) else owner.func.id
                if called == "get_param_store":
                    return True
    return False


def folder_prefixes(folder: str) -> set[str]:
    """File-name prefixes that would repeat ``folder``: its name, singular and short form."""
    names = {folder, folder.removesuffix("s")}
    if folder in ABBREVIATIONS:
        names.add(ABBREVIATIONS[folder])
    return names


def repeats_folder(path: Path) -> bool:
    """Whether a test file's name starts with its folder's name (``nn/test_nn_width.py``)."""
    stem = path.stem.removeprefix("test_")
    return any(stem == p or stem.startswith(f"{p}_") for p in folder_prefixes(path.parent.name))


# ----------------------------------------------------------------------------- the tree


def test_every_test_folder_is_a_package():
    """Without ``__init__.py`` two test files of the same name in different folders clash."""
    missing = [
        str(f.relative_to(TESTS)) for f in _test_folders() if not (f / "__init__.py").is_file()
    ]
    assert (TESTS / "__init__.py").is_file()
    assert not missing, f"test folders without __init__.py: {missing}"


def test_test_packages_mirror_the_package():
    strays = []
    for folder in _test_folders():
        relative = folder.relative_to(TESTS)
        mirrored = (PACKAGE / relative / "__init__.py").is_file()
        if not mirrored and not (
            len(relative.parts) == 1 and relative.parts[0] in NOT_IN_THE_PACKAGE
        ):
            strays.append(str(relative))
    assert not strays, (
        f"test packages {strays} have no bayes_nest package of the same path and are not in "
        f"the allow-list {sorted(NOT_IN_THE_PACKAGE)}"
    )


def test_file_names_do_not_repeat_their_folder():
    repeating = [
        str(p.relative_to(TESTS))
        for p in _test_modules()
        if p.parent != TESTS and repeats_folder(p)
    ]
    assert not repeating, f"test files named after their folder: {repeating}"


def test_shared_fixtures_are_defined_only_in_the_conftest():
    shared = set(fixtures((TESTS / "conftest.py").read_text()))
    assert {"digits", "tiny_mlp", "trained_fn3", "trained_bnnn", "pyro_state"} <= shared
    redefined, clearing = [], []
    for path in sorted(TESTS.rglob("*.py")):
        if path == TESTS / "conftest.py" or "__pycache__" in path.parts:
            continue
        for name, function in fixtures(path.read_text()).items():
            where = f"{path.relative_to(TESTS)}::{name}"
            if name in shared:
                redefined.append(where)
            if clears_param_store(function):
                clearing.append(where)
    assert not redefined, f"fixtures that shadow tests/conftest.py: {redefined}"
    assert not clearing, f"param-store-clearing fixtures outside tests/conftest.py: {clearing}"


# ----------------------------------------------------------------------------- the checks


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("@pytest.fixture\ndef digits():\n    pass\n", {"digits"}),
        ("@pytest.fixture(scope='module')\ndef digits():\n    pass\n", {"digits"}),
        ("@fixture(name='digits')\ndef _load():\n    pass\n", {"digits"}),
        ("@pytest.mark.slow\ndef test_digits():\n    pass\n", set()),
        ("def digits():\n    pass\n", set()),
    ],
)
def test_fixture_finder(source, expected):
    assert set(fixtures(source)) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("pyro.clear_param_store()", True),
        ("clear_param_store()", True),
        ("pyro.get_param_store().clear()", True),
        ("get_param_store().clear()", True),
        ("bnnn.clear_param_store()", False),  # one model's entries, not the store
        ("store.clear()", False),
        ("pyro.param('w', torch.zeros(1))", False),
    ],
)
def test_param_store_clearing_finder(body, expected):
    source = f"@pytest.fixture(autouse=True)\ndef _clean():\n    {body}\n    yield\n"
    (function,) = fixtures(source).values()
    assert clears_param_store(function) is expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("nn/test_nn_width.py", True),
        ("infer/test_infer.py", True),
        ("distributions/test_dist_kl.py", True),
        ("models/test_model_inputs.py", True),
        ("models/test_models.py", True),
        ("benchmarks/test_bench_docs_page.py", True),
        ("nn/test_width.py", False),
        ("nn/test_nest.py", False),  # "nest" is not "nn"
        ("search/test_searchlight.py", False),  # a longer word, not the prefix
    ],
)
def test_folder_prefix_rule(path, expected):
    assert repeats_folder(Path(path)) is expected
