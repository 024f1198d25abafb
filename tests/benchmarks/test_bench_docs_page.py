"""docs/benchmarks.md is generated from the committed results and must match them."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("docs_page", ROOT / "benchmarks" / "docs_page.py")
docs_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_page)


def test_page_is_up_to_date():
    assert docs_page.main(["--check"]) == 0, "run python benchmarks/docs_page.py"


def test_every_headline_names_a_reported_summary_key():
    for name, key, _target, _op in docs_page.HEADLINES:
        data = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert key in data["summary"], f"{name}.json has no summary key {key!r}"


def test_met_column_follows_the_comparison():
    assert docs_page._met(0.4, 0.5, "<=") and not docs_page._met(0.6, 0.5, "<=")
    assert docs_page._met(0.0, 0.0, ">=") and not docs_page._met(0.0, 0.0, ">")
    assert docs_page._met(True, True, "==") and not docs_page._met(False, True, "==")
