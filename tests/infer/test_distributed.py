"""Data-parallel training through the one training loop: process setup, sharded loaders, and
the matrix {FN3 (width), FN3 (depth and width, sandwich rule), BNNN (weight noise)} x {one
process, two gloo processes} x {plain, resumed}: equal weights and histories, checkpoints
interchangeable between world sizes, an injected NaN stopping every process before the update,
only rank 0 writing.

The two-process tests start one ``torchrun --standalone --nproc-per-node 2`` job (gloo on CPU,
a free localhost port) that runs this file's :func:`_worker` once for all scenarios; the tests
compare what the ranks wrote with the one-process runs of the same code and with a written-out
FN3 loop.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import IterableDataset

from bayes_nest.data import as_loader
from bayes_nest.infer import FN3Trainer, NonFiniteError, NonFiniteLossError, OrderedDropout
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.checkpoint import load_checkpoint
from bayes_nest.infer.distributed import (
    DistContext,
    check_amp,
    set_epoch,
    setup,
    shard_loader,
    teardown,
)
from bayes_nest.infer.distributed_bnnn import fit_bnnn_distributed
from bayes_nest.infer.distributed_fn3 import DistributedFN3Trainer, fit_fn3_distributed
from bayes_nest.models import MLP
from bayes_nest.nn.depth import NestedStage
from bayes_nest.nn.width import NestedLinear, SlicedLinear
from bayes_nest.testing import assert_close

N, FEATURES, CLASSES, BATCH, SEED, LR = 64, 8, 3, 16, 7, 1e-2
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(N, FEATURES, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def _mlp():
    torch.manual_seed(0)
    return MLP(FEATURES, [16, 16], CLASSES, groups=4)


def _depth_net():
    """Width and depth axes, no batch norm (so one- and two-process runs agree exactly)."""
    torch.manual_seed(0)

    def branch():
        return nn.Sequential(nn.Linear(16, 16), nn.Tanh())

    stem = nn.Sequential(nn.Linear(FEATURES, 16), nn.ReLU())
    return nn.Sequential(
        NestedStage([stem, branch(), branch(), branch()]),
        NestedLinear(16, 16, groups=4, activation="relu"),
        SlicedLinear(16, CLASSES),
    )


def _trainer(net, ctx, **kw):
    return FN3Trainer(
        net,
        ctx=ctx,
        optimizer=functools.partial(torch.optim.Adam, lr=LR),
        batch_size=BATCH,
        seed=SEED,
        progress=False,
        **kw,
    )


def _reference_fn3(net, epochs, sandwich=None):
    """Plain one-process loop, written out: the batches of ``as_loader(..., seed=SEED)``, one
    ordered-dropout draw per step (plus the sandwich's), averaged losses, Adam."""
    sampler = OrderedDropout(net, 0.9, seed=SEED, sandwich=sandwich)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loader = as_loader(_data(), BATCH, shuffle=True, seed=SEED)
    configs = []
    for _ in range(epochs):
        for x, y in loader:
            step = sampler.step_configs()
            configs.append(step)
            opt.zero_grad()
            for counts in step:
                sampler.apply(counts)
                (F.cross_entropy(net(x), y) / len(step)).backward()
            opt.step()
    sampler.clear()
    return configs


def _bnnn(seed=0):
    torch.manual_seed(seed)
    return BNNN(MLP(FEATURES, [16], CLASSES, groups=4), temperature=0.5)


def _params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_params_close(a, b):
    assert a.keys() == b.keys()
    assert_close(a, b)


# The test matrix: {FN3 (width), FN3 (depth and width, sandwich "both"), BNNN (weight noise)}
# x {one process, two processes} x {plain, resumed}. One function trains each kind, the same
# code in both world sizes.
KINDS = ("fn3", "fn3_depth", "bnnn")
EPOCHS = 3


def _model(kind, seed=0):
    """The initial model of ``kind``; another ``seed``, other initial weights (a resumed run
    must overwrite them)."""
    if kind == "bnnn":
        return _bnnn(seed)
    net = _mlp() if kind == "fn3" else _depth_net()
    if seed:
        torch.manual_seed(seed)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
    return net


def _fit(kind, model, ctx, data=None, **kw):
    """Train ``model`` of ``kind`` in ``ctx`` (None: this process alone); returns the history."""
    data = _data() if data is None else data
    if kind == "bnnn":
        return model.fit(
            data, ctx=ctx, batch_size=BATCH, seed=SEED, progress=False,
            optimizer=functools.partial(torch.optim.Adam, lr=LR), check_masks=ctx is not None,
            **kw,
        )  # fmt: skip
    sandwich = "both" if kind == "fn3_depth" else None
    return _trainer(model, ctx, sandwich=sandwich, check_masks=ctx is not None).fit(data, **kw)


def _index_batches(epochs):
    """The example indices of every global batch of the first ``epochs`` epochs."""
    loader = as_loader((torch.arange(N), torch.zeros(N)), BATCH, shuffle=True, seed=SEED)
    return [batch[0].tolist() for _ in range(epochs) for batch in loader]


# Its input holds a NaN in the runs of _nan_run: row 1 of the second global batch, so process 1
# of two meets it first.
BAD_EXAMPLE = _index_batches(1)[1][1]


def _nan_data():
    x, y = _data()
    x = x.clone()
    x[BAD_EXAMPLE, 0] = float("nan")
    return x, y


def _expected_nan_step(first_epoch):
    """The step (from the start of training) and the process of two that first meet the bad
    example, from epoch ``first_epoch`` on."""
    per_epoch = N // BATCH
    for step, batch in enumerate(_index_batches(EPOCHS)):
        if step >= first_epoch * per_epoch and BAD_EXAMPLE in batch:
            return step, batch.index(BAD_EXAMPLE) % 2
    raise AssertionError("the bad example is in no batch")


def _nan_run(kind, ctx, ckpt=None):
    """Train on :func:`_nan_data` (from ``ckpt``'s epoch 1 when given): the error's step and
    message and whether the weights are those before the bad step."""
    model = _model(kind, seed=0 if ckpt is None else 4)
    kw = {"checkpoint_path": ckpt, "resume": True} if ckpt is not None else {}
    try:
        _fit(kind, model, ctx, data=_nan_data(), epochs=EPOCHS, **kw)
    except NonFiniteError as error:
        return error.step, str(error), _params(model)
    return None, "", _params(model)


@pytest.fixture
def no_torchrun_env(monkeypatch):
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)


# ----------------------------------------------------------------------------- setup


def test_setup_without_torchrun_is_a_one_process_job(no_torchrun_env):
    ctx = setup(device="cpu")
    assert (ctx.rank, ctx.world_size, ctx.backend, ctx.is_main) == (0, 1, None, True)
    assert ctx.device == torch.device("cpu") and not ctx.distributed
    assert ctx.all_gather_object(3) == [3] and ctx.broadcast_object("a") == "a"
    ctx.barrier()
    teardown(ctx)


@pytest.mark.parametrize(
    "env, kwargs, match",
    [
        ({}, {"backend": "mpi"}, "backend"),
        ({}, {"backend": "nccl", "device": "cpu"}, "nccl"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, {"device": "cpu"}, "MASTER_ADDR"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, {"device": "cpu"}, "RANK=2"),
        ({"WORLD_SIZE": "two"}, {"device": "cpu"}, "WORLD_SIZE"),
        ({}, {"device": "tpu:0"}, "device"),
    ],
)
def test_setup_rejects_bad_configurations(no_torchrun_env, monkeypatch, env, kwargs, match):
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=match):
        setup(**kwargs)


def test_amp_is_offered_on_cuda_only():
    with pytest.raises(ValueError, match="amp=True needs a CUDA device"):
        check_amp(True, torch.device("cpu"))
    with pytest.raises(ValueError, match="amp must be"):
        check_amp("int8", torch.device("cuda", 0))
    assert check_amp(False, torch.device("cpu")) is None
    assert check_amp("bfloat16", torch.device("cuda", 0)) is torch.bfloat16
    with pytest.raises(ValueError, match="amp"):
        _trainer(_mlp(), DistContext(), amp=True)


# ----------------------------------------------------------------------------- data order


def test_shards_of_a_global_batch_are_that_batch_of_the_seeded_permutation():
    x, y = _data()
    shards = [
        shard_loader((x, y), BATCH, DistContext(rank=r, world_size=4), seed=SEED) for r in range(4)
    ]
    for epoch in (0, 3):
        for loader in shards:
            set_epoch(loader, epoch)
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(SEED + epoch))
        batches = [list(loader) for loader in shards]
        assert all(len(b) == N // BATCH for b in batches)
        for k in range(N // BATCH):
            local = [batches[r][k][0] for r in range(4)]
            assert all(len(part) == BATCH // 4 for part in local)
            assert torch.equal(
                torch.sort(torch.cat(local), dim=0).values,
                torch.sort(x[perm[k * BATCH : (k + 1) * BATCH]], dim=0).values,
            )


def test_shard_loader_rejects_indivisible_batches_and_iterable_datasets():
    x, y = _data()
    with pytest.raises(ValueError, match="not divisible by the number of processes 2"):
        shard_loader((x, y), 15, DistContext(world_size=2), seed=0)

    class Stream(IterableDataset):
        def __iter__(self):
            yield from zip(x, y, strict=True)

    with pytest.raises(TypeError, match="map-style"):
        shard_loader(Stream(), 16, DistContext(), seed=0)


# ----------------------------------------------------------------------------- one process


def test_one_process_trainer_matches_the_plain_reference_loop(no_torchrun_env):
    net, ref = _mlp(), _mlp()
    history = _trainer(net, setup(device="cpu")).fit(_data(), epochs=2)
    _reference_fn3(ref, 2)
    _assert_params_close(_params(net), _params(ref))
    assert len(history) == 2 and history.loss[-1] < history.loss[0] + 0.5


def test_the_distributed_fn3_entry_points_forward_every_setting(no_torchrun_env):
    """The compatibility wrappers are the one trainer: every keyword reaches it (a dropped one
    changes the weights: sandwich, distillation, coupling, clipping, prior)."""
    x, y = _data()
    kwargs = {
        "sandwich": "full",
        "distill": True,
        "coupling": "kind",
        "grad_clip": 0.05,
        "keep_prob": 0.7,
        "distribution": "uniform",
        "optimizer": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
        "batch_size": 16,
        "seed": SEED,
        "progress": False,
    }
    nets = [_depth_net(), _depth_net(), _depth_net()]
    plain = FN3Trainer(nets[0], **kwargs)
    ours = DistributedFN3Trainer(nets[1], find_unused_parameters=True, **kwargs)
    assert ours.ctx.world_size == 1  # setup() without torchrun: this process alone
    for k in range(3):
        batch = x[16 * k : 16 * (k + 1)], y[16 * k : 16 * (k + 1)]
        assert_close(ours.train_step(*batch), plain.train_step(*batch), dtype=torch.float32)
    _assert_params_close(_params(nets[1]), _params(nets[0]))
    reference = _depth_net()
    FN3Trainer(reference, **kwargs).fit((x, y), epochs=2)
    fit_fn3_distributed(nets[2], (x, y), epochs=2, **kwargs)
    _assert_params_close(_params(nets[2]), _params(reference))
    assert not torch.equal(
        _params(reference)["1.affine.weight"], _params(_depth_net())["1.affine.weight"]
    )


def test_the_distributed_bnnn_entry_point_is_bnnn_fit(no_torchrun_env):
    data = _data()
    kw = {"epochs": 2, "batch_size": BATCH, "seed": SEED, "progress": False}
    ours, plain = _bnnn(), _bnnn()
    fit_bnnn_distributed(ours, data, find_unused_parameters=True, **kw)
    plain.fit(data, **kw)
    _assert_params_close(_params(ours), _params(plain))


def test_non_finite_loss_stops_before_the_update():
    net = _mlp()
    trainer = _trainer(net, DistContext())
    before = _params(net)
    x, y = _data()
    x[3, 0] = float("nan")
    with pytest.raises(NonFiniteLossError, match="non-finite training loss nan at step 0"):
        trainer.train_step(x[:16], y[:16])
    _assert_params_close(_params(net), before)
    assert trainer.step == 0


# ----------------------------------------------------------------------------- two processes


def _worker(out: Path) -> None:
    """Run every two-process scenario on this process and save what the tests check."""
    import bayes_nest.infer.training.loop as loop_module

    torch.set_num_threads(1)
    ctx = setup()
    result: dict = {"writes": []}
    write = loop_module.save_checkpoint

    def counting(path, *args, **kwargs):
        result["writes"].append(Path(path).name)
        return write(path, *args, **kwargs)

    loop_module.save_checkpoint = counting
    for kind in KINDS:
        model = _model(kind)
        history = _fit(kind, model, ctx, epochs=EPOCHS, val=_data() if kind == "fn3" else None)
        result[f"{kind}/plain"], result[f"{kind}/history"] = _params(model), history.as_dict()
        # One epoch with a checkpoint, then a model with other weights resumed from it.
        ckpt = out / f"{kind}_2p.ckpt"
        _fit(kind, _model(kind), ctx, epochs=1, checkpoint_path=ckpt)
        if ctx.is_main:
            shutil.copy(ckpt, out / f"{kind}_2p_epoch1.ckpt")
            shutil.copy(ckpt, out / f"{kind}_2p_nan.ckpt")
        ctx.barrier()
        resumed = _model(kind, seed=4)
        _fit(kind, resumed, ctx, epochs=EPOCHS, checkpoint_path=ckpt, resume=True)
        result[f"{kind}/resumed"] = _params(resumed)
        # A checkpoint written by one process (the test wrote it before this job), resumed here.
        crossed = _model(kind, seed=4)
        _fit(kind, crossed, ctx, epochs=EPOCHS, checkpoint_path=out / f"{kind}_1p_to_2p.ckpt",
             resume=True)  # fmt: skip
        result[f"{kind}/from_one_process"] = _params(crossed)
        result[f"{kind}/nan"] = _nan_run(kind, ctx)
        result[f"{kind}/nan_resumed"] = _nan_run(kind, ctx, out / f"{kind}_2p_nan.ckpt")
    # Processes that initialise differently train process 0's initial network.
    differing = _model("fn3", seed=0 if ctx.rank == 0 else 9)
    _fit("fn3", differing, ctx, epochs=EPOCHS, val=_data())
    result["fn3/differing_init"] = _params(differing)
    try:  # 64 examples in batches of 21: a last batch of 1 cannot be split over 2 processes
        FN3Trainer(_mlp(), ctx=ctx, batch_size=21, progress=False).fit(_data(), epochs=1)
        result["split_error"] = None
    except ValueError as error:
        result["split_error"] = str(error)
    torch.save(result, out / f"rank{ctx.rank}.pt")
    teardown(ctx)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The one-process runs of the matrix (and the checkpoints the two-process job resumes)."""
    out = tmp_path_factory.mktemp("ddp")
    result = {}
    for kind in KINDS:
        model = _model(kind)
        history = _fit(kind, model, None, epochs=EPOCHS, val=_data() if kind == "fn3" else None)
        result[f"{kind}/plain"], result[f"{kind}/history"] = _params(model), history.as_dict()
        ckpt = out / f"{kind}_1p.ckpt"
        _fit(kind, _model(kind), None, epochs=1, checkpoint_path=ckpt)
        for copy in ("1p_to_2p", "1p_nan"):
            shutil.copy(ckpt, out / f"{kind}_{copy}.ckpt")
        resumed = _model(kind, seed=4)
        _fit(kind, resumed, None, epochs=EPOCHS, checkpoint_path=ckpt, resume=True)
        result[f"{kind}/resumed"] = _params(resumed)
        result[f"{kind}/nan"] = _nan_run(kind, None)
        result[f"{kind}/nan_resumed"] = _nan_run(kind, None, out / f"{kind}_1p_nan.ckpt")
    return out, result


@pytest.fixture(scope="module")
def two_ranks(one_process):
    """Run :func:`_worker` under ``torchrun --standalone --nproc-per-node 2``."""
    out, _ = one_process
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARS}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # localhost only, whatever the hostname says
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [__file__, "--worker", str(out)]
    proc = subprocess.Popen(
        cmd, env=env, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, text=True,
    )  # fmt: skip
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"two-process job timed out:\n{log[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # no stray workers
    assert proc.returncode == 0, f"two-process job failed:\n{log[-4000:]}"
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    return out, ranks


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_train_what_one_process_trains(one_process, two_ranks, kind):
    _, one = one_process
    _, (r0, r1) = two_ranks
    _assert_params_close(r0[f"{kind}/plain"], one[f"{kind}/plain"])
    _assert_params_close(r1[f"{kind}/plain"], r0[f"{kind}/plain"])
    for column, values in one[f"{kind}/history"].items():
        if column != "seconds":
            assert_close(r0[f"{kind}/history"][column], values, dtype=torch.float32)
            assert_close(r1[f"{kind}/history"][column], r0[f"{kind}/history"][column])
    moved = [
        k for k, v in r0[f"{kind}/plain"].items() if not torch.equal(v, _params(_model(kind))[k])
    ]
    assert len(moved) > 3  # training did change the weights


def test_every_process_starts_from_process_zeros_weights(one_process, two_ranks):
    _, one = one_process
    _, (r0, r1) = two_ranks
    for rank in (r0, r1):
        _assert_params_close(rank["fn3/differing_init"], one["fn3/plain"])


@pytest.mark.parametrize(("kind", "sandwich"), [("fn3", None), ("fn3_depth", "both")])
def test_fn3_in_two_processes_is_the_written_out_objective(two_ranks, kind, sandwich):
    _, (r0, _) = two_ranks
    reference = _model(kind)
    _reference_fn3(reference, EPOCHS, sandwich=sandwich)
    _assert_params_close(r0[f"{kind}/plain"], _params(reference))


@pytest.mark.parametrize("kind", KINDS)
def test_checkpoints_resume_exactly_across_world_sizes(one_process, two_ranks, kind):
    out, one = one_process
    _, (r0, r1) = two_ranks
    plain = one[f"{kind}/plain"]
    _assert_params_close(one[f"{kind}/resumed"], plain)  # 1 -> 1
    for rank in (r0, r1):
        _assert_params_close(rank[f"{kind}/resumed"], plain)  # 2 -> 2
        _assert_params_close(rank[f"{kind}/from_one_process"], plain)  # 1 -> 2
    crossed = _model(kind, seed=4)  # 2 -> 1
    _fit(kind, crossed, None, epochs=EPOCHS, checkpoint_path=out / f"{kind}_2p_epoch1.ckpt",
         resume=True)  # fmt: skip
    _assert_params_close(_params(crossed), plain)
    assert (
        load_checkpoint(out / f"{kind}_2p.ckpt", kind="bnnn" if kind == "bnnn" else "fn3")["epoch"]
        == EPOCHS
    )


@pytest.mark.parametrize("resumed", [False, True], ids=["plain", "resumed"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_non_finite_loss_stops_every_process_before_the_update(
    one_process, two_ranks, kind, resumed
):
    _, one = one_process
    _, (r0, r1) = two_ranks
    key = f"{kind}/nan_resumed" if resumed else f"{kind}/nan"
    step, process = _expected_nan_step(first_epoch=1 if resumed else 0)
    one_step, one_message, one_params = one[key]
    assert one_step == step and "non-finite" in one_message
    for rank, result in enumerate((r0, r1)):
        two_step, message, params = result[key]
        assert two_step == step and f"process {process}" in message, message
        if rank == process:  # the process that saw it names where it first appears
            assert f"at input batch on process {process}" in message, message
        _assert_params_close(params, one_params)  # the same weights: the bad step not taken
    if resumed:
        assert "Last good checkpoint" in r0[key][1]


def test_only_process_zero_writes_checkpoints(two_ranks):
    out, (r0, r1) = two_ranks
    assert r1["writes"] == []
    per_kind = {
        kind: sum(name in (f"{kind}_2p.ckpt", f"{kind}_1p_to_2p.ckpt") for name in r0["writes"])
        for kind in KINDS
    }
    # 1 epoch, then epochs 2 and 3 of the resumed run, then the same from the one-process file
    assert per_kind == dict.fromkeys(KINDS, 5)


def test_a_global_batch_that_cannot_be_split_is_refused(two_ranks):
    _, (r0, r1) = two_ranks
    for rank in (r0, r1):
        assert "last batch" in rank["split_error"] and "1 of 64" in rank["split_error"]


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(Path(sys.argv[2]))
    print(json.dumps({"done": True}))
