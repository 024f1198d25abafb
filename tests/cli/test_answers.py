"""``bayes-nest`` answers right or refuses clearly: model-bound fronts, data read in full,
standardization statistics that are usable, and one-line errors that blame the right thing."""

from __future__ import annotations

import fractions
import hashlib
import io
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import bayes_nest
from bayes_nest._files import atomic_write, temporary_folder
from bayes_nest.cli import main
from bayes_nest.data import load_file
from bayes_nest.infer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayes_nest.pipeline import CHECKPOINT_KIND, load_model
from bayes_nest.workflow import data_for

TINY = ["--hidden", "16,16", "--groups", "4", "--epochs", "1", "--no-progress"]


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("bayes-nest: error: "), err
    assert "Traceback" not in out + err
    return lines[0]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("answers")
    for seed in (0, 1):
        out = folder / f"m{seed}.ckpt"
        assert main(["fit", "--data", "digits", *TINY, "--seed", str(seed), "--out", str(out)]) == 0
    return folder / "m0.ckpt", folder / "m1.ckpt"


def _rewrite_model(src, dst, **changes) -> None:
    payload = load_checkpoint(src, kind=CHECKPOINT_KIND)
    payload.update(changes)
    save_checkpoint(dst, payload, kind=CHECKPOINT_KIND)


# ----------------------------------------------------------------------------- fronts


def test_front_of_another_model_is_refused(models, tmp_path, capsys):
    a, b = models
    front = tmp_path / "front.json"
    assert main(["search", str(a), "--data", "digits", "--out", str(front), "--no-progress"]) == 0
    capsys.readouterr()
    assert json.loads(front.read_text())["info"]["model_fingerprint"] == load_model(a).fingerprint()
    argv = ["--data", "digits", "--front", front, "--budget", "50%"]
    assert main(["evaluate", str(a), *map(str, argv)]) == 0
    line = one_line_error(capsys, "evaluate", b, *argv)
    assert "searched on another model" in line
    line = one_line_error(capsys, "export", b, "--front", front, "--budget", "50%",
                          "--out", tmp_path / "x.pt")  # fmt: skip
    assert "searched on another model" in line and not (tmp_path / "x.pt").exists()


def test_front_keep_count_must_be_whole(models, tmp_path, capsys):
    a, _ = models
    front = {"metric": "macs", "points": [{"config": {"hidden.0": 2.7}, "score": 1, "cost": 1}]}
    (tmp_path / "f.json").write_text(json.dumps(front))
    line = one_line_error(
        capsys, "evaluate", a, "--data", "digits", "--front", tmp_path / "f.json", "--budget", "1"
    )
    assert "2.7" in line and "whole numbers" in line


# ----------------------------------------------------------------------------- data files


def test_csv_with_byte_order_mark_and_no_header_keeps_its_first_row(tmp_path):
    rows = [[0.5, 1.5, 0], [2.5, 3.5, 1], [4.5, 5.5, 0], [6.5, 7.5, 1]] * 5
    text = "\n".join(",".join(f"{v:g}" for v in r) for r in rows) + "\n"
    (tmp_path / "bom.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())
    bundle = load_file(tmp_path / "bom.csv", val_fraction=0, test_fraction=0, standardize=None)
    assert len(bundle.train.y) == 20
    assert sorted(bundle.train.x[:, 0].tolist()).count(0.5) == 5


def test_npz_split_arrays(models, tmp_path, capsys):
    a, _ = models
    rng = np.random.default_rng(0)
    arrays = {
        "x": rng.normal(size=(30, 64)),
        "y": np.arange(30) % 10,
        "x_val": rng.normal(size=(7, 64)),
        "y_val": np.arange(7),
        "x_test": rng.normal(size=(5, 64)),
        "y_test": np.arange(5),
    }
    np.savez(tmp_path / "all.npz", **arrays)
    whole = data_for(load_model(a), tmp_path / "all.npz", whole=True)
    assert len(whole.test.y) == 42  # --split all: every example, predefined splits included
    np.savez(tmp_path / "half.npz", x=arrays["x"], y=arrays["y"], x_val=arrays["x_val"])
    line = one_line_error(capsys, "fit", "--data", tmp_path / "half.npz", *TINY,
                          "--out", tmp_path / "m.ckpt")  # fmt: skip
    assert "'x_val' but no 'y_val'" in line
    line = one_line_error(capsys, "fit", "--data", tmp_path / "all.npz", *TINY,
                          "--label-column", "0", "--out", tmp_path / "m.ckpt")  # fmt: skip
    assert "CSV files only" in line
    line = one_line_error(capsys, "evaluate", a, "--data", "digits", "--label-column", "3")
    assert "CSV files only" in line


def test_evaluating_a_file_with_fewer_classes_works(models, tmp_path, capsys):
    a, _ = models
    rng = np.random.default_rng(1)
    np.savez(tmp_path / "three.npz", x=rng.normal(size=(60, 64)), y=np.arange(60) % 3)
    for split in ("test", "all"):
        code = main(["evaluate", str(a), "--data", str(tmp_path / "three.npz"), "--split", split])
        out, err = capsys.readouterr()
        assert code == 0, err
        assert "val_fraction" not in err and "num_classes" not in err
        assert len(out.strip().splitlines()) == 3  # header, rule, one row: the full network


def test_label_beyond_int64_is_out_of_range(tmp_path, capsys):
    y = np.arange(40, dtype=np.uint64) % 2
    y[3] = 2**64 - 1
    np.savez(tmp_path / "u.npz", x=np.ones((40, 2)), y=y)
    line = one_line_error(capsys, "fit", "--data", tmp_path / "u.npz", *TINY,
                          "--out", tmp_path / "m.ckpt")  # fmt: skip
    assert "out of range" in line and "negative" not in line


# ----------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("scale", [1e39, 1e200])
def test_huge_finite_inputs_are_refused_at_fit(scale, tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "h.npz", x=rng.normal(size=(60, 3)) * scale, y=np.arange(60) % 2)
    out = tmp_path / "m.ckpt"
    line = one_line_error(capsys, "fit", "--data", tmp_path / "h.npz", *TINY, "--out", out)
    assert "float32" in line and "rescale" in line and not out.exists()


def test_huge_inputs_at_evaluation_are_not_called_nan(models, tmp_path, capsys):
    a, _ = models
    x = np.random.default_rng(0).normal(size=(20, 64))
    x[4, 7] = 1e200
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(20) % 10)
    line = one_line_error(capsys, "evaluate", a, "--data", tmp_path / "big.npz", "--split", "all")
    assert "too large for float32" in line and "NaN" not in line


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"std": torch.full((64,), float("inf"))}, "std holds NaN or infinite"),
        ({"mean": torch.zeros(3)}, "mean has shape (3,)"),
        ({"std": torch.zeros(64)}, "std holds values <= 0"),
    ],
)
def test_bad_stored_statistics_blame_the_model_file(models, tmp_path, capsys, change, needle):
    bad = tmp_path / "bad.ckpt"
    _rewrite_model(models[0], bad, **change)
    line = one_line_error(capsys, "evaluate", bad, "--data", "digits")
    assert needle in line and "model file" in line and "bad.ckpt" in line


# ----------------------------------------------------------------------------- errors


def test_huge_learning_rate_is_a_usage_error(tmp_path, capsys):
    line = one_line_error(capsys, "fit", "--data", "digits", *TINY, "--lr", "3e38",
                          "--out", tmp_path / "m.ckpt")  # fmt: skip
    assert "--lr" in line and "3e38" in line


def test_tampered_model_is_not_trusted_and_no_unsafe_advice(models, tmp_path, capsys):
    """A file with a valid header and digest whose payload needs arbitrary unpickling."""
    buffer = io.BytesIO()
    torch.save({"state": fractions.Fraction(1, 3)}, buffer)  # not loadable with weights_only
    data = buffer.getvalue()
    meta = {"format_version": 1, "kind": CHECKPOINT_KIND, "package_version": "0.1.0",
            "torch_version": torch.__version__, "payload_bytes": len(data)}  # fmt: skip
    body = json.dumps(meta, sort_keys=True).encode() + b"\n"
    meta["sha256"] = hashlib.sha256(body + data).hexdigest()
    bad = tmp_path / "tampered.ckpt"
    header = json.dumps(meta, sort_keys=True).encode() + b"\n"
    bad.write_bytes(b"BAYESNEST-CHECKPOINT\n" + header + data)
    with pytest.raises(CheckpointError, match="not a trusted bayes_nest checkpoint"):
        load_model(bad)
    line = one_line_error(capsys, "evaluate", bad, "--data", "digits")
    assert "not a trusted" in line and "weights_only" not in line


@pytest.mark.parametrize("path", ["folder", "/dev/null"])
def test_folder_or_device_is_not_a_regular_file(path, models, tmp_path, capsys):
    target = tmp_path if path == "folder" else path
    for argv in (
        ["fit", "--data", target, *TINY, "--out", tmp_path / "m.ckpt"],
        ["evaluate", target, "--data", "digits"],
        ["evaluate", models[0], "--data", "digits", "--front", target, "--budget", "1"],
        ["fit", "--config", target, "--data", "digits", "--out", tmp_path / "m.ckpt"],
    ):
        line = one_line_error(capsys, *argv)
        assert "not a regular file" in line and "does not exist" not in line, argv


def test_report_default_budgets_on_a_small_model(models, tmp_path, capsys):
    """10% of the full cost lies below the cheapest sub-network of this model."""
    code = main(["report", str(models[0]), "--data", "digits", "--out", str(tmp_path / "r"),
                 "--no-progress"])  # fmt: skip
    _, err = capsys.readouterr()
    assert code == 0, err
    assert "10%" in err and "left out" in err
    assert "| 25%" in (tmp_path / "r" / "report.md").read_text()


def test_interrupt_during_start_up_is_one_line(tmp_path):
    """Ctrl-C while the command imports its libraries: exit 130, one line, no traceback."""
    hook = tmp_path / "sitecustomize.py"
    hook.write_text(
        textwrap.dedent("""
        import sys
        class Interrupt:
            def find_spec(self, name, path=None, target=None):
                if name == "torch":
                    raise KeyboardInterrupt
        sys.meta_path.insert(0, Interrupt())
    """)
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(bayes_nest.__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root])}
    argv = ["evaluate", str(tmp_path / "m.ckpt"), "--data", "digits"]
    code = f"import sys; from bayes_nest.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "bayes-nest: interrupted"


def test_stale_temporary_files_of_dead_writers_are_removed(tmp_path):
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)  # fmt: skip
    dead = int(done.stdout)
    from bayes_nest._files import _HOST

    stale = tmp_path / f".m.ckpt.{_HOST}.{dead}.abc123.tmp"
    live = tmp_path / f".m.ckpt.{_HOST}.{os.getpid()}.def456.tmp"
    other = tmp_path / ".other.ckpt.x.1.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"partial")
    atomic_write(tmp_path / "m.ckpt", b"new")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, other.name, "m.ckpt"])
    # a report folder half-built by a killed run
    stale_folder = tmp_path / f".report.{_HOST}.{dead}.xyz.tmp"
    (stale_folder / "figures").mkdir(parents=True)
    fresh = temporary_folder(tmp_path / "report")
    assert not stale_folder.exists() and os.path.isdir(fresh)
