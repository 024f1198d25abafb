"""Ambiguous lesion segmentation: a BNNN U-Net's samples against four annotators, at two budgets.

Story: four experts outline the same lesions and disagree on the boundaries and on the faint
ones. We train one nested U-Net as a BNNN with a per-pixel Bernoulli likelihood, on one random
annotator per image and epoch, and draw several masks per image from its posterior, at the full
width and at a quarter of every width. The generalized energy distance (GED) scores how well the
samples match the annotators (both their agreement and their diversity); fresh annotations from
the data's known annotator distribution give the best reachable score. A figure shows one image,
its four annotations and the model's samples at both budgets.

Run::

    python examples/segmentation_lesions.py --figure lesions.png   # several minutes on CPU
    python examples/segmentation_lesions.py --quick   # a smoke test: too short for masks to form
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pyro
import torch

from bayes_nest import metrics
from bayes_nest.app import format_table
from bayes_nest.data import RandomAnnotatorDataset, load_segmentation
from bayes_nest.infer import BNNN, likelihoods
from bayes_nest.models import UNet
from bayes_nest.nn import axes
from bayes_nest.plots import segmentation_samples
from bayes_nest.subnet import cost, recalibrate_batchnorm


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller images and network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=Path, help="write the samples figure here (PNG)")
    args = parser.parse_args(argv)

    images, widths, groups, epochs, batch, samples = (
        (200, (4, 8), 2, 20, 16, 8) if args.quick else (1000, (8, 16, 32), 4, 30, 32, 16)
    )
    data = load_segmentation(num_images=images, size=32, seed=args.seed)
    torch.manual_seed(args.seed)
    net = UNet(1, 1, widths, bottleneck_blocks=2, groups=groups)
    bnnn = BNNN(net, likelihood=likelihoods.Bernoulli(len(data.train.x)))
    bnnn.fit(
        RandomAnnotatorDataset(data.train, seed=args.seed),
        epochs=epochs,
        batch_size=batch,
        optimizer=pyro.optim.Adam({"lr": 1e-2}),
        seed=args.seed,
    )

    x, masks = data.test
    oracle = torch.as_tensor(data.truth["test"].sample(samples, seed=args.seed))
    rows = [{"budget": "annotators (truth)", "MACs": "—", "pixel ECE": "—"}]
    rows[0]["GED"] = metrics.generalized_energy_distance(oracle, masks)
    rows[0]["Hungarian IoU"] = metrics.hungarian_iou(oracle, masks)
    drawn = {}
    for label, keep in (("1/4 of every width", groups // 4 or 1), ("full", groups)):
        config = {n: keep if a.kind == "width" else a.size for n, a in axes(net).items()}
        recalibrate_batchnorm(bnnn.net, data.train.x, config)  # statistics of this sub-network
        with torch.no_grad():
            probs = bnnn.predict(x, config=config, num_samples=samples)[:, :, 0]  # (S, N, H, W)
        drawn[label] = probs > 0.5
        rows.append(
            {
                "budget": label,
                "MACs": int(cost(net, config, "macs", input_shape=data.input_shape)),
                "GED": metrics.generalized_energy_distance(drawn[label], masks),
                "Hungarian IoU": metrics.hungarian_iou(drawn[label], masks),
                "pixel ECE": metrics.pixel_ece(probs, masks),
            }
        )
    print(format_table(rows, ["budget", "MACs", "GED", "Hungarian IoU", "pixel ECE"]))

    if args.figure is not None:
        # the test image on which the annotators disagree most
        spread = masks.float().std(1).sum((1, 2))
        i = int(spread.argmax())
        fig = segmentation_samples(
            x[i], masks[i], {label: m[:, i] for label, m in reversed(drawn.items())}
        )
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.figure, dpi=100)
        print(f"wrote {args.figure}")
    return {"rows": rows, "figure": args.figure}


if __name__ == "__main__":
    main()
