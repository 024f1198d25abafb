"""Data-parallel training of a nested MLP on the digits data, with ``torchrun``.

The one training loop runs on every process, each on its rows of every global mini-batch; the
gradients are summed over processes (gloo on CPU, nccl on GPUs), so the result is the
one-process result. Rank 0 writes the checkpoint and the report; every rank can resume from the
checkpoint, with any number of processes.

One machine, two processes (CPU or one GPU each)::

    torchrun --standalone --nproc-per-node 2 examples/distributed_fit.py --epochs 5 --out runs/fn3

Several machines: run on every node, with ``--node-rank`` 0, 1, ... and the first node's address::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 \\
        --rdzv-backend c10d --rdzv-endpoint node0.example.org:29500 --rdzv-id digits \\
        examples/distributed_fit.py --epochs 30 --out runs/fn3

Without ``torchrun`` (``python examples/distributed_fit.py ...``) it trains in one process.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

import torch

from bayes_nest import metrics
from bayes_nest.data import load_dataset
from bayes_nest.infer import BNNN, FN3Trainer, evaluate
from bayes_nest.infer.distributed import distributed
from bayes_nest.models import MLP
from bayes_nest.subnet import full, smallest


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--method", choices=("fn3", "bnnn"), default="fn3")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128, help="global batch (all processes)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda:<LOCAL_RANK> when available)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only; fn3)")
    p.add_argument("--out", type=Path, default=Path("runs/distributed"), help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    data = load_dataset("digits", seed=0)
    with distributed(device=args.device) as ctx:
        if ctx.is_main:
            args.out.mkdir(parents=True, exist_ok=True)
        ctx.barrier()
        checkpoint = args.out / "checkpoint.pt"
        torch.manual_seed(args.seed)  # training starts from rank 0's weights on every rank
        net = MLP(64, [128, 128], 10, groups=16)
        if args.method == "fn3":
            trainer = FN3Trainer(
                net,
                ctx=ctx,
                optimizer=functools.partial(torch.optim.Adam, lr=args.lr),
                batch_size=args.batch_size,
                seed=args.seed,
                amp=args.amp,
            )
            history = trainer.fit(
                data.train,
                epochs=args.epochs,
                val=data.val,
                checkpoint_path=checkpoint,
                resume=args.resume,
            ).as_dict()
            test = data.test[0].to(ctx.device), data.test[1].to(ctx.device)
            scores = {
                "full": evaluate(net, test, full(net))["accuracy"],
                "smallest": evaluate(net, test, smallest(net))["accuracy"],
            }
        else:
            bnnn = BNNN(net, temperature=0.5)
            history = bnnn.fit(
                data.train,
                epochs=args.epochs,
                ctx=ctx,
                optimizer=functools.partial(torch.optim.Adam, lr=args.lr),
                batch_size=args.batch_size,
                val=data.val,
                seed=args.seed,
                checkpoint_path=checkpoint,
                resume=args.resume,
            ).as_dict()
            x, y = data.test[0].to(ctx.device), data.test[1]
            scores = {
                name: metrics.accuracy(bnnn.predict(x, config=config(bnnn.net)).mean(0).cpu(), y)
                for name, config in (("full", full), ("smallest", smallest))
            }
        if ctx.is_main:
            report = {
                "method": args.method,
                "world_size": ctx.world_size,
                "backend": ctx.backend,
                "device": str(ctx.device),
                "epochs": args.epochs,
                "global_batch": args.batch_size,
                "test_accuracy": scores,
                "history": history,
            }
            (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
            print(
                f"{ctx.world_size} process(es), {ctx.backend or 'no process group'}: "
                f"test accuracy full {scores['full']:.3f}, smallest {scores['smallest']:.3f} "
                f"-> {args.out / 'report.json'}"
            )


if __name__ == "__main__":
    main()
