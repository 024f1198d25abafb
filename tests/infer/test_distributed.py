"""Data-parallel training: process setup, sharded data order, DDP equivalence with one-process
training, masks identical on all ranks, rank-0 checkpoints, resume.

The two-process tests start one ``torchrun --standalone --nproc-per-node 2`` job (gloo on CPU,
a free localhost port) that runs this file's :func:`_worker` once for all scenarios; the tests
compare what the ranks wrote with independent one-process computations.
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

from bayes_nest.infer import FN3Trainer, NonFiniteLossError, OrderedDropout
from bayes_nest.infer.bnnn import BNNN
from bayes_nest.infer.checkpoint import load_checkpoint
from bayes_nest.infer.distributed import (
    DistContext,
    SharedStream,
    check_amp,
    needs_unused_parameter_search,
    rank_seed,
    set_epoch,
    setup,
    shard_loader,
    teardown,
)
from bayes_nest.infer.distributed_bnnn import fit_bnnn_distributed
from bayes_nest.infer.distributed_fn3 import DistributedFN3Trainer
from bayes_nest.models import MLP, ResNet
from bayes_nest.nn.bayesian import deterministic_weights
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
    return DistributedFN3Trainer(
        net,
        ctx=ctx,
        optimizer=functools.partial(torch.optim.Adam, lr=LR),
        batch_size=BATCH,
        seed=SEED,
        progress=False,
        **kw,
    )


def _reference_fn3(net, epochs, sandwich=None):
    """Plain one-process loop: the global batches of the permutation ``randperm(N)`` seeded
    ``SEED + epoch`` (DistributedSampler's rule), one ordered-dropout draw per step."""
    x, y = _data()
    sampler = OrderedDropout(net, 0.9, seed=SEED, sandwich=sandwich)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    configs = []
    for epoch in range(epochs):
        perm = torch.randperm(N, generator=torch.Generator().manual_seed(SEED + epoch))
        for k in range(0, N, BATCH):
            idx = perm[k : k + BATCH]
            step = sampler.step_configs()
            configs.append(step)
            opt.zero_grad()
            for counts in step:
                sampler.apply(counts)
                (F.cross_entropy(net(x[idx]), y[idx]) / len(step)).backward()
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


def test_unused_parameter_search_is_needed_exactly_when_blocks_are_skipped():
    for net, shape in ((_mlp(), (4, FEATURES)), (ResNet(3, 3, [8], [3], groups=2), (2, 3, 8, 8))):
        sampler = OrderedDropout(net, 0.9, seed=0)
        sampler.apply(sampler.smallest())
        net(torch.randn(shape)).sum().backward()
        sampler.clear()
        unused = [n for n, p in net.named_parameters() if p.grad is None]
        assert needs_unused_parameter_search(net) == bool(unused)
    assert needs_unused_parameter_search(_depth_net())


# ----------------------------------------------------------------------------- random streams


def test_shared_stream_is_reproducible_and_leaves_the_global_stream_alone():
    torch.manual_seed(1)
    expected = torch.rand(3)
    a, b = SharedStream(5, torch.device("cpu")), SharedStream(5, torch.device("cpu"))
    torch.manual_seed(1)
    with a.active():
        first = torch.rand(2)
    assert torch.equal(torch.rand(3), expected)
    with b.active():
        assert torch.equal(torch.rand(2), first)
    with a.active():
        second = torch.rand(2)
    assert not torch.equal(first, second)
    assert len({rank_seed(SEED, 0, r) for r in range(8)} | {rank_seed(SEED, 1, 0)}) == 9


# ----------------------------------------------------------------------------- one process


def test_one_process_trainer_matches_the_plain_reference_loop(no_torchrun_env):
    net, ref = _mlp(), _mlp()
    history = _trainer(net, setup(device="cpu")).fit(_data(), epochs=2)
    _reference_fn3(ref, 2)
    _assert_params_close(_params(net), _params(ref))
    assert len(history) == 2 and history.loss[-1] < history.loss[0] + 0.5


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"sandwich": "both", "keep_prob": 0.7},
        {"sandwich": "full", "distill": True, "coupling": "kind"},
        {"grad_clip": 0.05, "distribution": "uniform"},
    ],
)
def test_one_process_step_equals_the_fn3_trainer_step(kwargs):
    x, y = _data()
    nets = [_depth_net(), _depth_net()]
    opt = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    plain = FN3Trainer(nets[0], optimizer=opt, seed=SEED, progress=False, **kwargs)
    ours = DistributedFN3Trainer(
        nets[1], ctx=DistContext(), optimizer=opt, seed=SEED, progress=False, **kwargs
    )
    for k in range(3):
        batch = x[16 * k : 16 * (k + 1)], y[16 * k : 16 * (k + 1)]
        loss, correct = plain.train_step(*batch)
        assert_close(ours.train_step(*batch), (loss, correct), dtype=torch.float32)
    _assert_params_close(_params(nets[1]), _params(nets[0]))


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


def _record_configs(trainer):
    records = []
    step_configs = trainer.sampler.step_configs

    def recorded():
        configs = step_configs()
        records.append(configs)
        return configs

    trainer.sampler.step_configs = recorded
    return records


@contextlib.contextmanager
def _count_writes(module, calls):
    original = module.save_checkpoint

    def counting(*args, **kwargs):
        calls.append(str(args[0]))
        return original(*args, **kwargs)

    module.save_checkpoint = counting
    try:
        yield
    finally:
        module.save_checkpoint = original


def _worker(out: Path) -> None:
    """Run every two-process scenario on this rank and save what the tests check."""
    import bayes_nest.infer.distributed_bnnn as dist_bnnn
    import bayes_nest.infer.fn3 as fn3

    torch.set_num_threads(1)
    ctx = setup()
    rank, result = ctx.rank, {}
    data = _data()

    # FN3 with width axes: parameters and the keep counts of every step.
    net = _mlp()
    trainer = _trainer(net, ctx, check_masks=True)
    records = _record_configs(trainer)
    history = trainer.fit(data, epochs=2, val=data)
    result["fn3"] = _params(net)
    result["fn3_configs"] = records
    result["fn3_configs_all_ranks"] = ctx.all_gather_object(records)
    result["fn3_history"] = history.as_dict()

    # Depth and width axes (unused parameters in DDP) with the sandwich rule (no_sync).
    net = _depth_net()
    _trainer(net, ctx, sandwich="both").fit(data, epochs=2)
    result["depth_sandwich"] = _params(net)

    # A NaN in rank 1's shard only (position 1 of the permutation): both ranks stop, no hang.
    x_nan = data[0].clone()
    x_nan[torch.randperm(N, generator=torch.Generator().manual_seed(SEED))[1], 0] = float("nan")
    try:
        _trainer(_mlp(), ctx).fit((x_nan, data[1]), epochs=1)
        result["nan_error"] = None
    except NonFiniteLossError as e:
        result["nan_error"] = (e.step, str(e))

    # Checkpoints: one epoch, then a fresh model resumed to three epochs.
    ckpt = out / "fn3.ckpt"
    calls: list[str] = []
    with _count_writes(fn3, calls):
        _trainer(_mlp(), ctx).fit(data, epochs=1, checkpoint_path=ckpt)
        if ctx.is_main:
            shutil.copy(ckpt, out / "fn3_epoch1.ckpt")
        ctx.barrier()
        torch.manual_seed(99)
        resumed = MLP(FEATURES, [16, 16], CLASSES, groups=4)
        _trainer(resumed, ctx).fit(data, epochs=3, checkpoint_path=ckpt, resume=True)
    result["fn3_resumed"] = _params(resumed)
    result["fn3_writes"] = calls

    # BNNN with posterior-mean weights: deterministic given the masks.
    bnnn = _bnnn()
    with deterministic_weights(bnnn.net):
        fit_bnnn_distributed(
            bnnn, data, epochs=2, ctx=ctx, batch_size=BATCH, seed=SEED, progress=False,
            check_masks=True,
        )  # fmt: skip
    result["bnnn"] = _params(bnnn)

    # BNNN with weight noise: resume equals an uninterrupted run.
    bnnn = _bnnn()
    kw = {"ctx": ctx, "batch_size": BATCH, "seed": SEED, "progress": False}
    fit_bnnn_distributed(bnnn, data, epochs=2, **kw)
    result["bnnn_noisy"] = _params(bnnn)
    bnnn_calls: list[str] = []
    with _count_writes(dist_bnnn, bnnn_calls):
        fit_bnnn_distributed(_bnnn(), data, epochs=1, checkpoint_path=out / "bnnn.ckpt", **kw)
        resumed = _bnnn(seed=5)
        fit_bnnn_distributed(
            resumed, data, epochs=2, checkpoint_path=out / "bnnn.ckpt", resume=True, **kw
        )
    result["bnnn_resumed"] = _params(resumed)
    result["bnnn_writes"] = bnnn_calls

    torch.save(result, out / f"rank{rank}.pt")
    teardown(ctx)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """Run :func:`_worker` under ``torchrun --standalone --nproc-per-node 2``."""
    out = tmp_path_factory.mktemp("ddp")
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
        log, _ = proc.communicate(timeout=180)
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


def test_two_processes_match_one_process_training(two_ranks):
    _, (r0, r1) = two_ranks
    ref = _mlp()
    ref_configs = _reference_fn3(ref, 2)
    _assert_params_close(r0["fn3"], _params(ref))
    _assert_params_close(r1["fn3"], r0["fn3"])
    assert r0["fn3_configs"] == ref_configs
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert r0["fn3_history"][key] == r1["fn3_history"][key], key
    assert 0.0 < r0["fn3_history"]["val_loss"][-1] < 5.0


def test_every_rank_draws_the_same_masks_at_every_step(two_ranks):
    _, (r0, r1) = two_ranks
    gathered = r0["fn3_configs_all_ranks"]
    assert len(gathered) == 2 and gathered[0] == gathered[1] == r1["fn3_configs"]
    assert len(gathered[0]) == 2 * N // BATCH
    assert len({tuple(c[0].values()) for c in gathered[0]}) > 1  # the masks do vary


def test_a_non_finite_loss_on_one_rank_stops_every_rank(two_ranks):
    _, (r0, r1) = two_ranks
    for result in (r0, r1):
        step, message = result["nan_error"]
        assert step == 0 and "non-finite training loss nan" in message


def test_depth_axes_and_sandwich_rule_match_one_process_training(two_ranks):
    _, (r0, r1) = two_ranks
    ref = _depth_net()
    _reference_fn3(ref, 2, sandwich="both")
    _assert_params_close(r0["depth_sandwich"], _params(ref))
    _assert_params_close(r1["depth_sandwich"], _params(ref))


def test_only_rank_zero_writes_checkpoints_and_resume_is_exact(two_ranks):
    out, (r0, r1) = two_ranks
    assert len(r0["fn3_writes"]) == 3 and r1["fn3_writes"] == []  # epochs 1, then 2 and 3
    assert len(r0["bnnn_writes"]) == 2 and r1["bnnn_writes"] == []
    assert sorted(p.name for p in out.iterdir() if "ckpt" in p.name) == [
        "bnnn.ckpt",
        "fn3.ckpt",
        "fn3_epoch1.ckpt",
    ]
    ref = _mlp()
    _reference_fn3(ref, 3)
    _assert_params_close(r0["fn3_resumed"], _params(ref))
    _assert_params_close(r1["fn3_resumed"], _params(ref))
    assert load_checkpoint(out / "fn3.ckpt", kind="fn3")["epoch"] == 3
    _assert_params_close(r0["bnnn_resumed"], r0["bnnn_noisy"])
    _assert_params_close(r1["bnnn_resumed"], r1["bnnn_noisy"])
    _assert_params_close(r0["bnnn_noisy"], r1["bnnn_noisy"])


def test_a_two_process_checkpoint_resumes_in_one_process(two_ranks, no_torchrun_env):
    out, _ = two_ranks
    ckpt = out / "one_process.ckpt"
    shutil.copy(out / "fn3_epoch1.ckpt", ckpt)
    torch.manual_seed(3)
    net = MLP(FEATURES, [16, 16], CLASSES, groups=4)
    _trainer(net, setup(device="cpu")).fit(_data(), epochs=3, checkpoint_path=ckpt, resume=True)
    ref = _mlp()
    _reference_fn3(ref, 3)
    _assert_params_close(_params(net), _params(ref))


def test_bnnn_elbo_is_scaled_as_in_one_process_training(two_ranks, no_torchrun_env):
    """Likelihood scaled by N / global batch and KL counted once: with posterior-mean weights
    the two-process run equals the one-process run step for step."""
    _, (r0, r1) = two_ranks
    bnnn = _bnnn()
    with deterministic_weights(bnnn.net):
        fit_bnnn_distributed(
            bnnn, _data(), epochs=2, ctx=setup(device="cpu"), batch_size=BATCH, seed=SEED,
            progress=False,
        )  # fmt: skip
    _assert_params_close(r0["bnnn"], _params(bnnn))
    _assert_params_close(r1["bnnn"], _params(bnnn))
    moved = [k for k in r0["bnnn"] if not torch.equal(r0["bnnn"][k], _params(_bnnn())[k])]
    assert any("keep_logits" in k for k in moved) and len(moved) > 3


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    _worker(Path(sys.argv[2]))
    print(json.dumps({"done": True}))
