"""docs/benchmarks.md and docs/claims.md are generated from the committed results and must match."""

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("docs_page", ROOT / "benchmarks" / "docs_page.py")
docs_page = importlib.util.module_from_spec(spec)
spec.loader.exec_module(docs_page)
claims = docs_page.docs_claims


def test_pages_are_up_to_date():
    assert docs_page.main(["--check"]) == 0, "run python benchmarks/docs_page.py"


def test_every_headline_names_a_reported_summary_key():
    results = docs_page.load_results()
    for name, key, _target, _op in docs_page.HEADLINES:
        data = claims.current(name, results)
        if data is None and name in claims.PROTOCOLS:
            continue  # pending its first full run under the current protocol
        data = json.loads((ROOT / "benchmarks" / "results" / f"{name}.json").read_text())
        assert key in data["summary"], f"{name}.json has no summary key {key!r}"


def test_met_column_follows_the_comparison():
    assert docs_page._met(0.4, 0.5, "<=") and not docs_page._met(0.6, 0.5, "<=")
    assert docs_page._met(0.0, 0.0, ">=") and not docs_page._met(0.0, 0.0, ">")
    assert docs_page._met(True, True, "==") and not docs_page._met(False, True, "==")


def test_results_count_only_under_the_current_protocol_version():
    check = claims.Check("ordering", "fn3_prefix_minus_random_pp", ">=", 10.0)
    summary = {"fn3_prefix_minus_random_pp": 12.5, "fn3_prefix_minus_random_pp_interval": [11, 14]}
    old = {"ordering": {"config": {}, "summary": summary}}
    assert claims.result_cell(check, old) == ("pending full run (protocol v1)", "—")
    stale = {"ordering": {"config": {"protocol_version": 0}, "summary": summary}}
    assert claims.result_cell(check, stale)[0].startswith("pending")
    fresh = {"ordering": {"config": {"protocol_version": 1}, "summary": summary}}
    assert claims.result_cell(check, fresh) == ("12.5 [11, 14]", "yes")
    summary["fn3_prefix_minus_random_pp"] = 9.0
    assert claims.result_cell(check, fresh)[1] == "**no**"
    # A benchmark without a protocol counts as it is, and says so on the page.
    free = claims.Check("cascade", "accuracy_gain_pp", ">", 0.0)
    assert claims.result_cell(free, {"cascade": {"summary": {"accuracy_gain_pp": 0.3}}}) == (
        "0.3",
        "yes",
    )


def test_every_claim_check_names_a_benchmark_with_a_script_and_protocols_exist():
    for claim in claims.CLAIMS:
        assert claim.checks or claim.note, f"claim without benchmark needs a reason: {claim.claim}"
        for check in claim.checks:
            assert (ROOT / "benchmarks" / f"{check.benchmark}.py").exists(), check.benchmark
    for name, version in claims.PROTOCOLS.items():
        text = (ROOT / "benchmarks" / "protocols" / f"{name}.md").read_text()
        assert re.search(rf"\*\*Version {version}, \d{{4}}-\d{{2}}-\d{{2}}\.\*\*", text), name
        script = (ROOT / "benchmarks" / f"{name}.py").read_text()
        assert f"PROTOCOL_VERSION = {version}" in script, name
