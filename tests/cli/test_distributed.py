"""``bayes-nest fit`` as a data-parallel job under ``torchrun`` (two CPU processes, gloo), and
the device, precision and checkpoint options of ``fit``.

The two-process job must train the network a one-process ``fit`` trains with the same seed and
global batch (same data order, same keep counts, averaged gradients), write its outputs from
rank 0 only (checked with an audit hook that logs every file write of every process), and
report errors as one line from rank 0.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bayes_nest.cli import main
from bayes_nest.pipeline import load_model
from bayes_nest.testing import argmax_margin, assert_close
from bayes_nest.workflow import data_for, evaluate_config

ROOT = Path(__file__).resolve().parents[2]
FIT = [
    "--hidden", "16,16", "--groups", "4", "--epochs", "3", "--batch-size", "32", "--seed", "5",
    "--lr", "0.01", "--no-progress",
]  # fmt: skip
SMALL = {"hidden.0": 1, "hidden.1": 2}

# Imported by every Python process started with this folder on PYTHONPATH: logs the rank of
# each process that opens a file for writing (or renames one) inside BN_TEST_WATCH, and makes
# rank 1 fail to read BN_TEST_DENY.
AUDIT_HOOK = """
import os, sys

def _hook(event, args):
    if event not in ("open", "os.rename", "os.link"):
        return
    path = args[1] if event in ("os.rename", "os.link") else args[0]
    if not isinstance(path, (str, bytes)):
        return
    path = os.path.abspath(os.fsdecode(path))
    deny = os.environ.get("BN_TEST_DENY")
    if event == "open" and deny and path == deny and os.environ.get("RANK") == "1":
        raise PermissionError(13, "Permission denied", path)
    watch, log = os.environ.get("BN_TEST_WATCH"), os.environ.get("BN_TEST_WRITE_LOG")
    if not (watch and log and path.startswith(watch + os.sep)):
        return
    placed = event in ("os.rename", "os.link")  # a finished file put in place
    mode, flags = (None, 0) if placed else (args[1], args[2])
    writes = placed or (
        any(c in mode for c in "wax+") if isinstance(mode, str)
        else bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    )
    if writes:
        with open(log, "a") as f:
            event = "os.rename" if placed else event
            f.write(f"{os.environ.get('RANK', '-')} {event} {os.path.basename(path)}\\n")

sys.addaudithook(_hook)
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Three noisy classes in 8 dimensions: 160 training examples (divisible by 2 processes
    and by the global batch of 32), 40 validation and 200 test examples."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 3))

    def split(n):
        x = rng.normal(size=(n, 8)).astype(np.float32)
        y = np.argmax(x @ w + rng.normal(scale=1.0, size=(n, 3)), axis=1)
        return x, y

    (x, y), (xv, yv), (xt, yt) = split(160), split(40), split(200)
    path = tmp_path_factory.mktemp("data") / "three.npz"
    np.savez(path, x=x, y=y, x_val=xv, y_val=yv, x_test=xt, y_test=yt)
    return path


def torchrun(tmp_path: Path, *argv, **env_extra) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc-per-node 2 -m bayes_nest.cli fit ...`` on a
    free localhost port (``--standalone``), every output line prefixed by its local rank."""
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(AUDIT_HOOK)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(hooks), str(ROOT), env.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="1",
        **{k: str(v) for k, v in env_extra.items()},
    )
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "--tee", "3", "-m", "bayes_nest.cli", "fit", *map(str, argv),
    ]  # fmt: skip
    # A guard against a hung job (a rank waiting in a collective forever), not a speed test.
    return subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )


def rank_lines(text: str, rank: int) -> list[str]:
    prefix = f"[default{rank}]:"
    return [line[len(prefix) :] for line in text.splitlines() if line.startswith(prefix)]


def test_two_processes_train_the_one_process_network_and_rank_0_writes_once(tmp_path, data):
    one = tmp_path / "one.ckpt"
    assert main(["fit", "--data", str(data), *FIT, "--out", str(one)]) == 0
    job = tmp_path / "job"
    job.mkdir()
    log = tmp_path / "writes.log"
    two, checkpoint = job / "two.ckpt", job / "train.ckpt"
    run = torchrun(
        tmp_path,
        "--data", data, *FIT, "--device", "cpu", "--checkpoint", checkpoint, "--out", two,
        BN_TEST_WATCH=job, BN_TEST_WRITE_LOG=log,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    # rank 0 prints the summary; rank 1 prints nothing at all
    (summary,) = rank_lines(run.stdout, 0)
    assert summary.startswith("trained fn3 mlp for 3 epochs") and "2 process(es) (gloo)" in summary
    assert rank_lines(run.stdout + run.stderr, 1) == []
    # every write into the job folder came from rank 0: the model once, the checkpoint per epoch
    writes = [line.split() for line in log.read_text().splitlines()]
    assert writes and {rank for rank, _, _ in writes} == {"0"}
    renames = [name for _, event, name in writes if event == "os.rename"]
    assert renames.count("two.ckpt") == 1 and renames.count("train.ckpt") == 3
    assert sorted(p.name for p in job.iterdir()) == ["train.ckpt", "two.ckpt"]

    a, b = load_model(one), load_model(two)
    assert (a.options["processes"], b.options["processes"]) == (1, 2)
    # Averaging gradients across two processes reorders sums: equal up to rounding that three
    # epochs of training accumulate.
    assert_close(b.module.state_dict(), a.module.state_dict(), scale=10)
    test = data_for(a, data).test
    for config in ({}, SMALL):
        scores_a, probs_a = evaluate_config(a, test, config, ood=None, return_probs=True)
        scores_b, probs_b = evaluate_config(b, test, config, ood=None, return_probs=True)
        assert_close(probs_b, probs_a, scale=100)
        # The same predicted class wherever the top two classes are not (nearly) tied.
        near_tie = argmax_margin(probs_a.mean(0)) < 1e-3
        same_class = probs_a.mean(0).argmax(-1) == probs_b.mean(0).argmax(-1)
        assert bool(same_class[~near_tie].all())
        assert abs(scores_a["accuracy"] - scores_b["accuracy"]) <= float(near_tie.float().mean())
    assert evaluate_config(a, test, {}, ood=None)["accuracy"] > 0.5  # trained (chance: ~1/3)


def test_an_error_on_one_rank_is_one_line_from_rank_0_and_every_rank_exits_2(tmp_path, data):
    precious = tmp_path / "model.ckpt"
    precious.write_bytes(b"keep me")
    run = torchrun(
        tmp_path,
        "--data", data, *FIT, "--out", precious, "--force",
        BN_TEST_DENY=data,  # rank 1 cannot read the data
    )  # fmt: skip
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if "bayes-nest: " in line]
    assert len(errors) == 1, run.stderr[-3000:]
    assert errors[0].startswith("[default0]:bayes-nest: error: ")  # reported by rank 0
    assert errors[0].endswith("(on rank 1)") and str(data) in errors[0]
    assert "Traceback" not in "".join(rank_lines(run.stderr, 0) + rank_lines(run.stderr, 1))
    # torchrun's summary: rank 0 exited with 2; rank 1 too, unless torchrun ended it first
    codes = re.findall(r"exitcode\s*:\s*(-?\d+)", run.stderr)
    assert "2" in codes and set(codes) <= {"2", "-15"}, codes
    assert precious.read_bytes() == b"keep me"


# ----------------------------------------------------------------------------- one process


def fit(capsys, *argv) -> tuple[int, str, str]:
    code = main(["fit", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(capsys, *argv) -> str:
    code, out, err = fit(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayes-nest: error: "), err
    return lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_and_mixed_precision_without_cuda_are_one_line_errors(tmp_path, capsys, data):
    out = tmp_path / "m.ckpt"
    assert "CUDA is not available" in one_line_error(
        capsys, "--data", data, *FIT, "--device", "cuda", "--out", out
    )
    for amp in ([], ["float16"], ["bfloat16"]):
        line = one_line_error(capsys, "--data", data, *FIT, "--amp", *amp, "--out", out)
        assert "needs --device cuda" in line
    line = one_line_error(capsys, "--data", data, *FIT, "--backend", "nccl", "--out", out)
    assert "--backend nccl needs --device cuda" in line
    assert not out.exists()


def test_mixed_precision_is_refused_for_bnnn(tmp_path, capsys, data, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # refused before any CUDA use
    line = one_line_error(
        capsys, "--data", data, *FIT, "--method", "bnnn", "--device", "cuda", "--amp",
        "--out", tmp_path / "m.ckpt",
    )  # fmt: skip
    assert "FN3 training only" in line


def test_checkpoint_options_are_checked(tmp_path, capsys, data):
    out, ckpt = tmp_path / "m.ckpt", tmp_path / "train.ckpt"
    assert "--resume needs --checkpoint" in one_line_error(
        capsys, "--data", data, *FIT, "--resume", "--out", out
    )
    assert "must differ from --out" in one_line_error(
        capsys, "--data", data, *FIT, "--checkpoint", out, "--out", out
    )
    ckpt.write_bytes(b"an earlier run")
    line = one_line_error(capsys, "--data", data, *FIT, "--checkpoint", ckpt, "--out", out)
    assert "pass --resume" in line and ckpt.read_bytes() == b"an earlier run"
    line = one_line_error(
        capsys, "--data", data, *FIT, "--checkpoint", ckpt, "--resume", "--out", out
    )
    assert "train.ckpt" in line  # not a checkpoint: refused, named
    assert not out.exists()


def test_distributed_trainer_in_one_process_equals_plain_fit(tmp_path, capsys, data):
    """``--distributed`` without torchrun: the data-parallel trainer with one rank reads the
    data in the order of the one-process trainer, so both give the same network."""
    plain, dist = tmp_path / "plain.ckpt", tmp_path / "dist.ckpt"
    assert fit(capsys, "--data", data, *FIT, "--out", plain)[0] == 0
    code, out, _ = fit(capsys, "--data", data, *FIT, "--distributed", "--out", dist)
    assert code == 0 and "1 process(es) (one process)" in out
    a, b = load_model(plain).module.state_dict(), load_model(dist).module.state_dict()
    assert_close(b, a)  # the same steps; gradients pass through the one-rank all-reduce


@pytest.mark.parametrize("method", ["fn3", "bnnn"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, capsys, data, method):
    flags = ["--data", data, *FIT, "--method", method]
    if method == "bnnn":
        flags.append("--distributed")  # the data-parallel SVI, one rank
    whole, part, ckpt = tmp_path / "whole.ckpt", tmp_path / "part.ckpt", tmp_path / "t.ckpt"
    assert fit(capsys, *flags, "--out", whole)[0] == 0
    assert fit(capsys, *flags, "--epochs", "1", "--checkpoint", ckpt, "--out", part)[0] == 0
    assert len(load_model(part).history["epoch"]) == 1
    code, _, err = fit(capsys, *flags, "--checkpoint", ckpt, "--resume", "--out", part, "--force")
    assert code == 0, err
    a, b = load_model(whole), load_model(part)
    assert b.history["epoch"] == [1, 2, 3]
    state_a = a.bnnn.state_dict() if method == "bnnn" else a.module.state_dict()
    state_b = b.bnnn.state_dict() if method == "bnnn" else b.module.state_dict()
    # Bit-identical: the resumed run repeats the same operations on the same data in order.
    assert_close(state_b, state_a, rtol=0, atol=0)


@pytest.mark.slow
def test_two_process_jobs_resume_checkpoints(tmp_path, capsys, data):
    """BNNN SVI under torchrun, resumed from the checkpoint of a two-process run: the result
    equals the uninterrupted two-process run; FN3 resumes a one-process checkpoint with two
    processes and ends with the one-process network."""
    flags = ["--data", data, *FIT, "--method", "bnnn"]
    whole, part, ckpt = tmp_path / "whole.ckpt", tmp_path / "part.ckpt", tmp_path / "t.ckpt"
    assert torchrun(tmp_path, *flags, "--out", whole).returncode == 0
    run = torchrun(tmp_path, *flags, "--epochs", "1", "--checkpoint", ckpt, "--out", part)
    assert run.returncode == 0, run.stderr[-3000:]
    run = torchrun(tmp_path, *flags, "--checkpoint", ckpt, "--resume", "--out", part, "--force")
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_model(whole).bnnn.state_dict(), load_model(part).bnnn.state_dict()
    assert_close(b, a, scale=10)

    fn3 = ["--data", data, *FIT]
    one, two, ckpt = tmp_path / "one.ckpt", tmp_path / "two.ckpt", tmp_path / "fn3.ckpt"
    assert fit(capsys, *fn3, "--out", one)[0] == 0
    assert fit(capsys, *fn3, "--epochs", "1", "--checkpoint", ckpt, "--out", two)[0] == 0
    run = torchrun(tmp_path, *fn3, "--checkpoint", ckpt, "--resume", "--out", two, "--force")
    assert run.returncode == 0, run.stderr[-3000:]
    a, b = load_model(one).module.state_dict(), load_model(two).module.state_dict()
    assert_close(b, a, scale=10)
