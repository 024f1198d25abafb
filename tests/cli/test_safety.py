"""``bayes-nest`` loses no work: outputs are checked before training, created exclusively,
never equal to (or containing) an input, and a resumed run continues the very same run."""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
import torch

import bayes_nest.app.fitting as pipeline
from bayes_nest._files import atomic_write
from bayes_nest.cli import main
from bayes_nest.pipeline import load_model
from bayes_nest.testing import assert_close

TINY = ["--hidden", "16,16", "--groups", "4", "--epochs", "1", "--no-progress"]


def run(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err.strip()


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("safety") / "fn3.ckpt"
    assert main(["fit", "--data", "digits", *TINY, "--out", str(path)]) == 0
    return path


def _no_training(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("training started although the output cannot be written")

    monkeypatch.setattr(pipeline, "fit", refuse)


# ----------------------------------------------------------------------------- outputs


def test_output_that_appears_during_training_is_kept(tmp_path, capsys, monkeypatch):
    """Another run writes --out while this one trains: this one fails and the other's file
    survives byte for byte (without --force); with --force it is replaced."""
    out = tmp_path / "m.ckpt"
    real_fit = pipeline.fit

    def fit_then_race(*args, **kwargs):
        model = real_fit(*args, **kwargs)
        out.write_bytes(b"the other run's model")
        return model

    monkeypatch.setattr(pipeline, "fit", fit_then_race)
    code, err = run(capsys, "fit", "--data", "digits", *TINY, "--out", out)
    assert code == 2 and "appeared" in err and "--force" in err
    assert out.read_bytes() == b"the other run's model"
    assert os.listdir(tmp_path) == ["m.ckpt"]  # no temporary file left behind
    code, err = run(capsys, "fit", "--data", "digits", *TINY, "--out", out, "--force")
    assert code == 0, err
    assert load_model(out).method == "fn3"


def test_racing_exclusive_writers_exactly_one_wins(tmp_path):
    path, barrier, results = tmp_path / "out.json", threading.Barrier(8), {}

    def writer(i: int) -> None:
        barrier.wait()
        try:
            atomic_write(path, f"writer {i}", exclusive=True)
            results[i] = "ok"
        except FileExistsError:
            results[i] = "refused"

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "ok"]
    assert len(winners) == 1 and len(results) == 8
    assert path.read_text() == f"writer {winners[0]}"
    assert sorted(os.listdir(tmp_path)) == ["out.json"]


def test_output_equal_to_an_input_is_refused_even_with_force(model_file, tmp_path, capsys):
    model = tmp_path / "m.ckpt"
    model.write_bytes(model_file.read_bytes())
    before = model.read_bytes()
    code, err = run(
        capsys, "search", model, "--data", "digits", "--out", model, "--force", "--no-progress"
    )
    assert code == 2 and "is the input" in err and "m.ckpt" in err
    link = tmp_path / "link.json"
    link.symlink_to(model)
    code, err = run(capsys, "evaluate", model, "--data", "digits", "--json", link, "--force")
    assert code == 2 and "is the input" in err
    code, err = run(capsys, "export", model, "--out", tmp_path / "m.pt", "--force")
    assert code == 0, err  # m.pt, m.pt2, m.json: none of them is the model
    code, err = run(capsys, "export", model, "--out", tmp_path / "m.ckpt", "--force")
    assert code == 0, err  # writes m.ckpt.pt, ...: the model file itself is not an output
    assert model.read_bytes() == before
    data = tmp_path / "d.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(60, 4)), y=np.arange(60) % 3)
    code, err = run(capsys, "fit", "--data", data, *TINY, "--out", data, "--force")
    assert code == 2 and "is the input" in err
    np.load(data)  # intact


def test_report_folder_containing_its_model_is_refused(model_file, tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    model = folder / "fn3.ckpt"
    model.write_bytes(model_file.read_bytes())
    code, err = run(capsys, "report", model, "--data", "digits", "--out", folder, "--force")
    assert code == 2 and "contains the input" in err
    assert model.read_bytes() == model_file.read_bytes()


def test_report_folder_that_appears_meanwhile_is_kept(tmp_path):
    from bayes_nest.report import _replace_dir

    new, out = tmp_path / "new", tmp_path / "out"
    new.mkdir()
    (new / "report.md").write_text("new report")
    out.mkdir()
    (out / "notes.txt").write_text("the other run's folder")
    with pytest.raises(FileExistsError, match="appeared"):
        _replace_dir(new, out, force=False)
    assert (out / "notes.txt").read_text() == "the other run's folder"
    _replace_dir(new, out, force=True)
    assert sorted(os.listdir(out)) == ["report.md"] and not new.exists()


def test_hard_link_to_an_input_is_the_input(tmp_path):
    from bayes_nest._files import check_not_input

    data = tmp_path / "d.csv"
    data.write_text("1,0\n")
    os.link(data, tmp_path / "alias.csv")
    with pytest.raises(ValueError, match="is the input"):
        check_not_input(tmp_path / "alias.csv", [data])
    with pytest.raises(ValueError, match="contains the input"):
        check_not_input(tmp_path, ["digits", data])
    check_not_input(tmp_path / "other.csv", ["digits", data, None])  # unrelated: accepted


@pytest.mark.parametrize("where", ["proc", "under_a_file", "read_only"])
def test_unwritable_output_fails_before_training(where, tmp_path, capsys, monkeypatch):
    _no_training(monkeypatch)
    if where == "proc":
        out = "/proc/nope/m.ckpt"
    elif where == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "sub" / "m.ckpt"
    else:
        if os.geteuid() == 0:
            pytest.skip("root may write into read-only folders")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        out = locked / "new" / "m.ckpt"
    code, err = run(capsys, "fit", "--data", "digits", *TINY, "--out", out)
    assert code == 2 and "cannot write output" in err
    if where == "under_a_file":
        assert (tmp_path / "file").read_text() == "x"
    assert not os.path.exists(os.path.dirname(os.fspath(out))) or where == "proc"


# ----------------------------------------------------------------------------- resume


@pytest.fixture(scope="module")
def checkpointed(tmp_path_factory):
    """A training checkpoint at epoch 2, its model, and the command that wrote it."""
    folder = tmp_path_factory.mktemp("resume")
    flags = ["--data", "digits", *TINY, "--epochs", "2", "--checkpoint", folder / "t.ckpt"]
    flags = [str(f) for f in flags]
    assert main(["fit", *flags, "--out", str(folder / "first.ckpt")]) == 0
    return folder, flags


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--lr", "0.01"], "--lr 0.01 (checkpoint: 0.003)"),
        (["--keep-prob", "0.5"], "--keep-prob 0.5 (checkpoint: 0.9)"),
        (["--weight-decay", "0.1"], "--weight-decay 0.1"),
        (["--distribution", "uniform"], "--distribution 'uniform' (checkpoint: 'geometric')"),
        (["--sandwich", "full"], "--sandwich 'full' (checkpoint: None)"),
        (["--split-seed", "3"], "--split-seed 3 (checkpoint: 0)"),
        (["--val-fraction", "0.2"], "--val-fraction 0.2 (checkpoint: 0.1)"),
        (["--epochs", "1"], "--epochs 1 is below the 2 epochs"),
    ],
)
def test_resume_with_other_settings_is_refused(checkpointed, change, named, capsys):
    folder, flags = checkpointed
    before = (folder / "t.ckpt").read_bytes()
    out = folder / "resumed.ckpt"
    code, err = run(capsys, "fit", *flags, *change, "--resume", "--out", out)
    assert code == 2 and named in err, err
    assert not out.exists() and (folder / "t.ckpt").read_bytes() == before


def test_resume_with_the_same_settings_continues(checkpointed, capsys):
    folder, flags = checkpointed
    out = folder / "longer.ckpt"
    code, err = run(capsys, "fit", *flags, "--epochs", "3", "--resume", "--out", out)
    assert code == 0, err
    model = load_model(out)
    assert model.options["epochs"] == 3 and model.history["epoch"] == [1, 2, 3]
    first = load_model(folder / "first.ckpt")
    assert model.data == first.data  # the split is the checkpoint's


def test_resume_from_a_checkpoint_without_recorded_settings_is_refused(tmp_path, capsys):
    from bayes_nest.infer.checkpoint import save_checkpoint

    ckpt = tmp_path / "old.ckpt"
    save_checkpoint(ckpt, {"epoch": 1}, kind="fn3")
    code, err = run(
        capsys, "fit", "--data", "digits", *TINY, "--checkpoint", ckpt, "--resume",
        "--out", tmp_path / "m.ckpt",
    )  # fmt: skip
    assert code == 2 and "does not record the settings" in err


# ----------------------------------------------------------------------------- sandwich


def test_sandwich_none_is_honoured_from_command_line_and_config(tmp_path, capsys):
    full, none, conf = tmp_path / "full.ckpt", tmp_path / "none.ckpt", tmp_path / "conf.ckpt"
    flags = ["fit", "--data", "digits", *TINY, "--sandwich", "full", "--out", full]
    assert run(capsys, *flags)[0] == 0
    flags = ["fit", "--data", "digits", *TINY, "--sandwich", "none", "--out", none]
    assert run(capsys, *flags)[0] == 0
    (tmp_path / "fit.json").write_text(json.dumps({"sandwich": "none"}))
    flags = ["fit", "--config", tmp_path / "fit.json", "--data", "digits", *TINY]
    assert run(capsys, *flags, "--out", conf)[0] == 0
    a, b, c = load_model(full), load_model(none), load_model(conf)
    assert a.options["sandwich"] == "full"
    assert b.options["sandwich"] is c.options["sandwich"] is None  # the library's spelling
    # the full network is no longer trained in every step: other weights, same in both runs
    wa, wb, wc = (m.module.state_dict() for m in (a, b, c))
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    # exact: a config file and flags that ask for the same run repeat the same operations
    assert_close(wc, wb, rtol=0, atol=0)


@pytest.mark.slow
def test_two_racing_fit_processes_on_one_output(tmp_path):
    """Two real ``fit`` processes with the same --out: exactly one succeeds, the other says
    the output exists (or appeared meanwhile), and the file is the winner's complete model."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(pipeline.__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "m.ckpt"
    argv = [sys.executable, "-m", "bayes_nest.cli", "fit", "--data", "digits", *TINY]
    runs = [
        subprocess.Popen(
            [*argv, "--seed", str(i), "--out", str(out)],
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for i in range(2)
    ]
    done = [(r.wait(timeout=600), r.stdout.read(), r.stderr.read()) for r in runs]
    assert sorted(code for code, _, _ in done) == [0, 2], done
    (winner,) = [i for i, (code, _, _) in enumerate(done) if code == 0]
    loser_err = done[1 - winner][2]
    assert "exists" in loser_err or "appeared" in loser_err
    assert load_model(out).options["seed"] == winner
    assert os.listdir(tmp_path) == ["m.ckpt"]
