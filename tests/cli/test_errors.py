"""Bad input to ``bayes-nest``: one line on stderr naming the problem, exit status 2, no
traceback, and nothing the user had is overwritten."""

from __future__ import annotations

import numpy as np
import pytest

from bayes_nest.cli import main

TINY = ["--hidden", "16,16", "--groups", "4", "--epochs", "1", "--no-progress"]
PRECIOUS = b"user data that must survive\n"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("errors") / "fn3.ckpt"
    assert main(["fit", "--data", "digits", *TINY, "--out", str(path)]) == 0
    return path


@pytest.fixture
def precious(tmp_path):
    """An existing output file whose bytes must not change."""
    path = tmp_path / "existing.out"
    path.write_bytes(PRECIOUS)
    yield path
    assert path.read_bytes() == PRECIOUS


def assert_bad(capsys, argv, *needles: str) -> str:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1, err
    assert lines[0].startswith("bayes-nest: error: "), err
    assert "Traceback" not in err + out
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def npz(tmp_path, name="bad.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_missing_data_file(tmp_path, capsys, precious):
    assert_bad(
        capsys,
        ["fit", "--data", tmp_path / "nope.npz", *TINY, "--out", precious, "--force"],
        "nope.npz",
        "does not exist",
    )


def test_missing_checkpoint(tmp_path, capsys, precious):
    assert_bad(
        capsys,
        ["evaluate", tmp_path / "gone.ckpt", "--data", "digits", "--json", precious, "--force"],
        "gone.ckpt",
        "does not exist",
    )


def test_wrong_shapes_at_fit(tmp_path, capsys, precious):
    path = npz(tmp_path, x=np.zeros(50), y=np.zeros(50))
    assert_bad(capsys, ["fit", "--data", path, *TINY, "--out", precious, "--force"], "shape")
    path = npz(tmp_path, "len.npz", x=np.zeros((50, 3)), y=np.arange(40) % 2)
    assert_bad(capsys, ["fit", "--data", path, *TINY, "--out", precious, "--force"], "50", "40")


def test_wrong_shapes_for_a_trained_model(ckpt, tmp_path, capsys, precious):
    rng = np.random.default_rng(0)
    path = npz(tmp_path, x=rng.normal(size=(40, 32)), y=np.arange(40) % 10)
    assert_bad(
        capsys,
        ["evaluate", ckpt, "--data", path, "--split", "all", "--json", precious, "--force"],
        "(32,)",
        "(64,)",
    )


def test_nans(tmp_path, capsys, precious):
    x = np.random.default_rng(0).normal(size=(60, 4))
    x[7, 2] = np.nan
    path = npz(tmp_path, x=x, y=np.arange(60) % 3)
    assert_bad(capsys, ["fit", "--data", path, *TINY, "--out", precious, "--force"], "NaN")


def test_unknown_labels(ckpt, tmp_path, capsys, precious):
    rng = np.random.default_rng(0)
    y = np.arange(40) % 10
    y[3] = 12
    path = npz(tmp_path, x=rng.normal(size=(40, 64)), y=y)
    assert_bad(
        capsys,
        ["evaluate", ckpt, "--data", path, "--split", "all", "--json", precious, "--force"],
        "unknown labels",
        "12",
    )
    y[3] = -1
    path = npz(tmp_path, "neg.npz", x=rng.normal(size=(40, 64)), y=y)
    assert_bad(capsys, ["fit", "--data", path, *TINY, "--out", precious, "--force"], "negative")


def test_unknown_axis_and_out_of_range_count(ckpt, capsys, precious):
    assert_bad(
        capsys,
        ["export", ckpt, "--subnet", "hidden.7=2", "--out", precious, "--force"],
        "unknown axis",
        "hidden.7",
    )
    assert_bad(
        capsys, ["evaluate", ckpt, "--data", "digits", "--subnet", "hidden.0=9"], "hidden.0", "9"
    )
    assert_bad(capsys, ["evaluate", ckpt, "--data", "digits", "--subnet", "hidden.0"], "AXIS=COUNT")


def test_corrupt_checkpoint(ckpt, tmp_path, capsys, precious):
    data = bytearray(ckpt.read_bytes())
    data[-100] ^= 0xFF
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(bytes(data))
    assert_bad(
        capsys,
        ["evaluate", bad, "--data", "digits", "--json", precious, "--force"],
        "bad.ckpt",
        "SHA-256",
    )
    bad.write_bytes(data[: len(data) // 2])
    assert_bad(capsys, ["export", bad, "--out", precious, "--force"], "truncated")
    bad.write_bytes(b"not a checkpoint")
    assert_bad(
        capsys,
        ["report", bad, "--data", "digits", "--out", tmp_path / "r"],
        "not a bayes_nest checkpoint",
    )
    assert not (tmp_path / "r").exists()


def test_bad_config_files(tmp_path, capsys, precious):
    (tmp_path / "a.toml").write_text("epochs = = 3\n")
    assert_bad(
        capsys,
        ["fit", "--config", tmp_path / "a.toml", "--out", precious, "--force"],
        "a.toml",
        "not valid TOML",
    )
    (tmp_path / "b.yaml").write_text("data: digits\nepoch: 3\n")
    assert_bad(
        capsys,
        ["fit", "--config", tmp_path / "b.yaml", "--out", precious, "--force"],
        "unknown option 'epoch'",
    )
    (tmp_path / "c.yaml").write_text("data: digits\nepochs: many\n")
    assert_bad(
        capsys,
        ["fit", "--config", tmp_path / "c.yaml", "--out", precious, "--force"],
        "'epochs'",
        "integer",
    )
    (tmp_path / "d.yaml").write_text("- just\n- a list\n")
    assert_bad(
        capsys, ["fit", "--config", tmp_path / "d.yaml", "--out", precious, "--force"], "mapping"
    )
    assert_bad(
        capsys,
        ["fit", "--config", tmp_path / "none.toml", "--out", precious, "--force"],
        "none.toml",
        "does not exist",
    )


def test_bad_option_values(capsys, precious):
    assert_bad(
        capsys,
        ["fit", "--data", "digits", "--epochs", "0", "--out", precious],
        "--epochs",
        "positive",
    )
    assert_bad(
        capsys, ["fit", "--data", "digits", "--keep-prob", "1.5", "--out", precious], "--keep-prob"
    )
    assert_bad(
        capsys, ["fit", "--data", "digits", "--model", "transformer", "--out", precious], "--model"
    )
    assert_bad(
        capsys,
        ["fit", "--data", "digits", "--hidden", "30", "--out", precious, "--force"],
        "divisible",
    )
    assert_bad(
        capsys,
        [
            "fit",
            "--data",
            "digits",
            "--method",
            "fn3",
            "--temperature",
            "0.5",
            "--out",
            precious,
            "--force",
        ],
        "temperature",
        "fn3",
    )
    assert_bad(capsys, ["frobnicate"], "invalid choice")
    assert_bad(capsys, ["fit", "--data", "digits"], "--out")


def test_existing_output_is_refused_without_force(ckpt, tmp_path, capsys, precious):
    assert_bad(capsys, ["fit", "--data", "digits", *TINY, "--out", precious], "exists", "--force")
    assert_bad(capsys, ["evaluate", ckpt, "--data", "digits", "--json", precious], "exists")
    stem = tmp_path / "small"
    (tmp_path / "small.pt2").write_bytes(PRECIOUS)
    assert_bad(capsys, ["export", ckpt, "--out", f"{stem}.pt"], "small.pt2", "exists")
    assert (tmp_path / "small.pt2").read_bytes() == PRECIOUS
    assert not (tmp_path / "small.pt").exists()


def test_debug_shows_the_traceback(tmp_path, capsys):
    from bayes_nest.infer.checkpoint import CheckpointError

    argv = ["evaluate", str(tmp_path / "x.ckpt"), "--data", "digits"]
    with pytest.raises(CheckpointError, match="does not exist"):
        main([*argv, "--debug"])
    assert_bad(capsys, argv, "x.ckpt")


def test_infeasible_budget_and_bad_front(ckpt, tmp_path, capsys, precious):
    front = tmp_path / "front.json"
    assert (
        main(["search", str(ckpt), "--data", "digits", "--out", str(front), "--no-progress"]) == 0
    )
    capsys.readouterr()
    assert_bad(
        capsys,
        [
            "evaluate",
            ckpt,
            "--data",
            "digits",
            "--front",
            front,
            "--budget",
            "10",
            "--json",
            precious,
            "--force",
        ],
        "no sub-network fits budget 10",
    )
    assert_bad(
        capsys,
        ["export", ckpt, "--front", front, "--budget", "5", "--out", precious, "--force"],
        "cheapest",
    )
    assert_bad(capsys, ["evaluate", ckpt, "--data", "digits", "--budget", "50%"], "--front")
    (tmp_path / "junk.json").write_text("{not json")
    assert_bad(
        capsys,
        [
            "evaluate",
            ckpt,
            "--data",
            "digits",
            "--front",
            tmp_path / "junk.json",
            "--budget",
            "50%",
        ],
        "junk.json",
        "not a front file",
    )
    assert_bad(capsys, ["search", ckpt, "--data", "digits", "--out", precious], "exists")


def test_existing_demo_or_report_folder_is_kept(tmp_path, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_bytes(PRECIOUS)
    assert_bad(capsys, ["demo", "--quick", "--out", folder], "not written by the demo", "--force")
    assert_bad(
        capsys, ["report", tmp_path / "x.ckpt", "--data", "digits", "--out", folder], "exists"
    )
    assert (folder / "notes.txt").read_bytes() == PRECIOUS
