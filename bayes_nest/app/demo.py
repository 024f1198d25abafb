"""The main job: one nested network on scikit-learn's digits, trained both ways, searched,
reported and exported (``bayes-nest demo``).

Steps: load the built-in digits (offline); train the same nested MLP with FN3 (ordered dropout)
and as a BNNN (learned Downhill posteriors over the orderings, mean-field weight posteriors);
search each model's Pareto front of validation accuracy against MACs; pick the best sub-network
for each budget and measure it on the test split (accuracy, NLL, ECE, OOD AUROC against noise
inputs); write a report folder with tables and figures, both trained models, both fronts, and
the chosen sub-networks exported as standalone PyTorch files.

Examples
--------
>>> import bayes_nest as bn
>>> summary = bn.run_demo("demo-report", quick=True)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .._files import check_writable
from ..data import load_dataset
from ..defaults import DEFAULT_BUDGETS, SPLIT_DEFAULTS
from .budgets import analyse
from .fitting import fit
from .outputs import export_subnet
from .report import write_report
from .spec import ModelSpec
from .tables import format_table

__all__ = ["BUDGETS", "EXPORT_BUDGET", "MARKER", "RECIPE", "SETTINGS", "run_demo"]

SETTINGS = {
    "full": {"hidden": [128, 128], "groups": 16, "fn3_epochs": 40, "bnnn_epochs": 100},
    "quick": {"hidden": [64, 64], "groups": 8, "fn3_epochs": 15, "bnnn_epochs": 30},
}
"""Network and epochs of the full and the quick demo."""
RECIPE = {"fn3": {"sandwich": "full"}, "bnnn": {"temperature": 0.5}}
"""Training options of the demo that differ from the library's defaults
(`bayes_nest.defaults`): FN3 also trains the full network at every step (the sandwich
rule) and the BNNN's Downhill relaxation runs at temperature 0.5; the rest are the defaults."""
BUDGETS = DEFAULT_BUDGETS
"""MACs budgets, as shares of the full network's MACs."""
EXPORT_BUDGET = "25%"
"""Budget whose chosen sub-networks are exported."""
MARKER = ".bayes-nest-demo"
"""File marking a folder written by the demo; such a folder may be replaced by a new run."""
COLUMNS = ["model", "config", "macs", "params", "accuracy", "nll", "ece", "ood_auroc"]


def _onnx_available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError:
        return False
    return True


def run_demo(
    out: str | os.PathLike = "demo-report",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    force: bool = False,
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run the main job and write its report folder ``out``.

    Parameters
    ----------
    out : path
        Report folder. An existing folder is replaced only if an earlier demo wrote it (it holds
        the `MARKER` file) or with ``force``.
    quick : bool
        Smaller network and fewer epochs (`SETTINGS`).
    seed : int
        Seed of the data split, the initial weights and training.
    progress : bool
        Progress bars on training and search.
    echo : callable
        Where step messages and result tables go (default ``print``).

    Returns
    -------
    dict
        ``out`` (the folder), ``rows`` (per model and budget), ``seconds``.
    """
    out = Path(out)
    if out.exists() and not force and not (out / MARKER).is_file():
        raise FileExistsError(
            f"output {str(out)!r} exists and was not written by the demo; pass --force to "
            "replace it or choose another --out"
        )
    check_writable(out)  # before training, not after
    start = time.perf_counter()
    mode = "quick" if quick else "full"
    cfg = SETTINGS[mode]
    echo(f"[1/5] loading scikit-learn digits (offline); {mode} mode, seed {seed}")
    data = load_dataset("digits", seed=seed)
    spec = ModelSpec("mlp", {"hidden": cfg["hidden"], "groups": cfg["groups"]})
    info = {"source": "digits", **SPLIT_DEFAULTS, "seed": seed}
    common = {"progress": progress, "data_info": info, "seed": seed}
    echo(
        f"[2/5] training FN3 (ordered dropout): MLP 64-{cfg['hidden']}-10, "
        f"{cfg['groups']} blocks per hidden layer, {cfg['fn3_epochs']} epochs"
    )
    fn3 = fit(spec, data, "fn3", epochs=cfg["fn3_epochs"], **RECIPE["fn3"], **common)
    echo(
        f"[3/5] training BNNN (Downhill posteriors over the block order, SVI), "
        f"{cfg['bnnn_epochs']} epochs"
    )
    bnnn = fit(spec, data, "bnnn", epochs=cfg["bnnn_epochs"], **RECIPE["bnnn"], **common)
    echo("[4/5] searching the accuracy/MACs front of each model (validation split)")
    analyses = [
        analyse(m, data, label=label, budgets=BUDGETS, progress=progress)
        for label, m in (("FN3", fn3), ("BNNN", bnnn))
    ]
    full_macs = fn3.cost_model("macs")({})
    for i, budget in enumerate(BUDGETS):
        rows = [{"model": a.label, **a.rows[i]} for a in analyses]
        share = float(budget[:-1]) / 100
        echo(
            f"\nbudget {budget} of the full network's MACs (<= {share * full_macs:,.0f} MACs), "
            "test split:"
        )
        echo(format_table(rows, COLUMNS))
    echo("")
    echo(
        "[5/5] writing the report, the trained models, the fronts and the exported "
        f"sub-networks (budget {EXPORT_BUDGET})"
    )
    index = BUDGETS.index(EXPORT_BUDGET)
    onnx = _onnx_available() and not quick
    written: list[str] = []

    def populate(folder: Path) -> None:
        for a in tqdm(analyses, desc="saving and exporting", unit="model", disable=not progress):
            name = a.label.lower()
            a.model.save(folder / "models" / f"{name}.ckpt")
            (folder / "fronts").mkdir(exist_ok=True)
            (folder / "fronts" / f"{name}.json").write_text(a.front.to_json())
            paths = export_subnet(
                a.model,
                a.rows[index]["subnet"],
                folder / "export" / f"{name}_subnet.pt",
                calibration=data.train,
                onnx=onnx,
            )
            written.extend(os.path.relpath(p, folder) for p in paths.values())
        results = {
            "mode": mode,
            "seed": seed,
            "budgets": list(BUDGETS),
            "rows": [{"model": a.label, **r} for a in analyses for r in a.rows],
        }
        (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")

    notes = [
        "Trained models: `models/fn3.ckpt`, `models/bnnn.ckpt` (use them with `bayes-nest "
        "evaluate`, `search`, `export`, `report`). Fronts: `fronts/*.json`.",
        f"Exported sub-networks for the {EXPORT_BUDGET} budget: `export/*_subnet.pt` (plain "
        "module, `torch.load(..., weights_only=False)`), `.pt2` (`torch.export.load`), `.json` "
        "(config and input standardization)" + (", `.onnx`" if onnx else "") + ".",
        "The BNNN is exported with its posterior mean weights; its table rows average "
        f"{bnnn.options['predict_samples']} posterior samples.",
    ]
    write_report(
        out,
        analyses,
        title="bayes_nest demo: nested networks on digits",
        data_name="scikit-learn digits (8x8 images, 10 classes)",
        notes=notes,
        populate=populate,
        force=True,
        marker=MARKER,
    )
    seconds = time.perf_counter() - start
    echo(f"done in {seconds:.0f} s: {out / 'report.md'}; exported {', '.join(written)}")
    rows = [{"model": a.label, **r} for a in analyses for r in a.rows]
    return {"out": out, "rows": rows, "seconds": seconds}
