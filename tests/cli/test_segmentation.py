"""``bayes-nest`` on segmentation: fit --task segmentation, evaluate, search, export, report and
bad input, on tiny lesion images (checked against brute-force metrics of the model's own
outputs)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from bayes_nest.cli import main
from bayes_nest.data import make_lesions
from bayes_nest.infer.checkpoint import load_checkpoint
from bayes_nest.pipeline import CHECKPOINT_KIND, load_model
from bayes_nest.subnet import use
from bayes_nest.testing import assert_close
from tests.cli.segmentation_testing import QUIET, TINY, run


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A user .npz of 24 lesion images (16 x 16, 4 annotators), an FN3 U-Net trained on it
    from the command line, and a BNNN U-Net trained on the built-in set from a config file."""
    root = tmp_path_factory.mktemp("seg")
    images, masks, _ = make_lesions(24, size=16, seed=3)
    np.savez(root / "lesions16.npz", images=images, masks=masks)
    fn3 = root / "fn3.ckpt"
    argv = ["fit", "--task", "segmentation", "--data", str(root / "lesions16.npz"), *TINY]
    assert main([*argv, "--epochs", "2", "--batch-size", "8", "--out", str(fn3), *QUIET]) == 0
    config = root / "fit.toml"
    config.write_text(
        'task = "segmentation"\ndata = "lesions"\nmethod = "bnnn"\nnum_images = 24\n'
        "image_size = 16\nepochs = 1\nbatch_size = 8\npredict_samples = 4\n"
        "[model]\nwidths = [4, 8]\ngroups = 2\nbottleneck_blocks = 1\n"
    )
    bnnn = root / "bnnn.ckpt"
    assert main(["fit", "--config", str(config), "--out", str(bnnn), *QUIET]) == 0
    return {"root": root, "npz": root / "lesions16.npz", "fn3": fn3, "bnnn": bnnn}


def brute_force_ged(samples: np.ndarray, annotations: np.ndarray) -> float:
    """GED^2 with d = 1 - IoU (0 for two empty masks), by explicit loops over every pair."""

    def d(a, b):
        union = np.logical_or(a, b).sum()
        return 0.0 if union == 0 else 1 - np.logical_and(a, b).sum() / union

    per_image = []
    for n in range(annotations.shape[0]):
        s, y = samples[:, n], annotations[n]
        cross = np.mean([d(a, b) for a in s for b in y])
        within_s = np.mean([d(a, b) for a in s for b in s])
        within_y = np.mean([d(a, b) for a in y for b in y])
        per_image.append(2 * cross - within_s - within_y)
    return float(np.mean(per_image))


def brute_force_hungarian_iou(samples: np.ndarray, annotations: np.ndarray) -> float:
    """Best mean IoU over every one-to-one matching (samples repeated to the annotators'
    count), by enumerating all permutations."""
    scores = []
    for n in range(annotations.shape[0]):
        y = annotations[n]
        s = np.concatenate([samples[:, n]] * (len(y) // len(samples)))
        iou = [
            [
                1.0
                if not np.logical_or(a, b).any()
                else np.logical_and(a, b).sum() / np.logical_or(a, b).sum()
                for b in y
            ]
            for a in s
        ]
        best = max(
            np.mean([iou[i][j] for i, j in enumerate(p)]) for p in itertools.permutations(range(4))
        )
        scores.append(best)
    return float(np.mean(scores))


def test_the_task_is_recorded_in_the_model_file(trained):
    for key in ("fn3", "bnnn"):
        payload = load_checkpoint(trained[key], kind=CHECKPOINT_KIND)
        assert payload["task"] == "segmentation"
        model = load_model(trained[key])
        assert model.task == "segmentation" and model.spec.name == "unet"
        assert model.input_shape == (1, 16, 16) and model.num_classes == 1
    assert load_model(trained["bnnn"]).data["num_images"] == 24


def test_evaluate_reports_ged_iou_and_pixel_scores_of_the_models_outputs(trained, capsys):
    out = trained["root"] / "eval.json"
    argv = ["evaluate", str(trained["fn3"]), "--data", str(trained["npz"]), "--split", "all"]
    code, text, _ = run([*argv, "--subnet", "level0=1", "--json", str(out)], capsys)
    assert code == 0 and "GED" in text and "Hungarian IoU" in text
    (row,) = json.loads(out.read_text())["rows"]
    # oracle: the model's raw sigmoid outputs on the file's images, standardized by hand
    model = load_model(trained["fn3"])
    images, masks, _ = make_lesions(24, size=16, seed=3)
    x = (torch.as_tensor(images, dtype=torch.float64) - model.mean.double()) / model.std.double()
    model.module.eval()
    with torch.no_grad(), use(model.module, {"level0": 1}):
        probs = torch.sigmoid(model.module(x.float()))[:, 0].numpy()
    # '--split all' scores every image (in the split's order: the means do not depend on it)
    samples = (probs > 0.5)[None]
    assert row["n"] == 24
    assert_close(row["ged"], brute_force_ged(samples, masks.astype(bool)), dtype=torch.float32)
    assert_close(
        row["hungarian_iou"],
        brute_force_hungarian_iou(samples, masks.astype(bool)),
        dtype=torch.float32,
    )
    p = np.clip(probs[:, None], 1e-12, 1 - 1e-12)
    nll = -np.mean(np.where(masks == 1, np.log(p), np.log(1 - p)))
    assert_close(row["pixel_nll"], nll, dtype=torch.float32)


def test_search_front_scores_are_the_negated_ged_of_evaluate(trained, capsys):
    front_path = trained["root"] / "front.json"
    data = ["--data", "lesions", "--split", "test"]
    code, text, _ = run(["search", str(trained["bnnn"]), *data, "--out", str(front_path)], capsys)
    assert code == 0 and "neg_ged" in text
    front = json.loads(front_path.read_text())
    assert front["info"]["score"] == "neg_ged"
    points = front["points"]
    assert len(points) >= 2
    cheapest = min(points, key=lambda p: p["cost"])
    out = trained["root"] / "cheapest.json"
    subnet = json.dumps(cheapest["config"])
    code, _, _ = run(
        ["evaluate", str(trained["bnnn"]), *data, "--subnet", subnet, "--json", str(out)], capsys
    )
    assert code == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert_close(cheapest["score"], -row["ged"])
    assert row["macs"] == cheapest["cost"]
    # the pixel-NLL score ranks by the negated pixel NLL of the same predictions
    nll_front = trained["root"] / "front_nll.json"
    argv = ["search", str(trained["bnnn"]), *data, "--score", "neg_pixel_nll"]
    assert run([*argv, "--out", str(nll_front)], capsys)[0] == 0
    by_config = {
        json.dumps(p["config"], sort_keys=True): p
        for p in json.loads(nll_front.read_text())["points"]
    }
    same = by_config[json.dumps(cheapest["config"], sort_keys=True)]
    assert_close(same["score"], -row["pixel_nll"])


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    images = rng.normal(size=(12, 1, 8, 8))
    np.savez(root / "flat_masks.npz", images=images, masks=rng.random((12, 8, 8)) > 0.5)
    np.savez(root / "soft_masks.npz", images=images, masks=np.full((12, 2, 8, 8), 0.5))
    np.savez(root / "counts.npz", images=images, masks=np.zeros((11, 2, 8, 8)))
    np.savez(root / "classes.npz", x=rng.normal(size=(30, 4)), y=np.arange(30) % 2)
    np.savez(root / "seg.npz", images=images, masks=np.zeros((12, 2, 8, 8)))
    return root


SEG = ["fit", "--task", "segmentation", *TINY, "--epochs", "1"]
BAD_INPUT = [
    (SEG + ["--data", "{root}/flat_masks.npz"], "masks must have shape (N, A, H, W)"),
    (SEG + ["--data", "{root}/soft_masks.npz"], "masks must be binary"),
    (SEG + ["--data", "{root}/counts.npz"], "images has 12 examples but masks has 11"),
    (SEG + ["--data", "{root}/classes.npz"], "holds no segmentation data"),
    (SEG + ["--data", "digits"], "'digits' is a classification dataset"),
    (SEG + ["--data", "lesions", "--model", "mlp"], "--task segmentation does not fit --model"),
    (["fit", "--data", "{root}/seg.npz"], "holds segmentation data"),
    (["fit", "--data", "lesions"], "'lesions' is a segmentation dataset"),
    (["fit", "--task", "classification", "--data", "digits", "--model", "unet"], "does not fit"),
    (["fit", "--data", "digits", "--num-images", "10"], "--num-images sizes the built-in"),
    (["evaluate", "{fn3}", "--data", "digits"], "'digits' is a classification dataset"),
    (["evaluate", "{fn3}", "--data", "{root}/classes.npz"], "holds no segmentation data"),
    (["search", "{fn3}", "--data", "{npz}", "--score", "accuracy"], "does not apply to a seg"),
]


@pytest.mark.parametrize(("argv", "message"), BAD_INPUT)
def test_bad_segmentation_input_is_one_line_and_exit_2(argv, message, trained, bad_files, capsys):
    names = {"root": bad_files, "fn3": trained["fn3"], "npz": trained["npz"]}
    argv = [a.format(**names) for a in argv]
    out = bad_files / "never.ckpt"
    extra = ["--out", str(out)] if argv[0] in ("fit", "search") else []
    code, _, err = run([*argv, *extra], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bayes-nest: error: ")
    assert message in lines[0]
    assert not out.exists()


def test_a_classifier_refuses_segmentation_scores_and_data(trained, bad_files, capsys):
    model = bad_files / "classes.ckpt"
    argv = ["fit", "--data", str(bad_files / "classes.npz"), "--epochs", "1"]
    assert run([*argv, "--out", str(model)], capsys)[0] == 0
    code, _, err = run(["evaluate", str(model), "--data", "lesions"], capsys)
    assert code == 2 and "'lesions' is a segmentation dataset" in err
    argv = ["search", str(model), "--data", str(bad_files / "classes.npz"), "--score", "neg_ged"]
    code, _, err = run([*argv, "--out", str(bad_files / "f.json")], capsys)
    assert code == 2 and "applies to segmentation models only" in err
    code, _, err = run(
        ["report", str(model), str(trained["fn3"]), "--data", "lesions", "--out", "r"], capsys
    )
    assert code == 2 and "one report shows models of one task" in err


def test_resuming_with_another_size_of_the_built_in_set_is_refused(tmp_path, capsys):
    ckpt, out = tmp_path / "seg.train", tmp_path / "seg.ckpt"
    argv = ["fit", "--task", "segmentation", "--data", "lesions", "--num-images", "20", *TINY]
    argv += ["--checkpoint", str(ckpt), "--out", str(out), "--batch-size", "8"]
    assert run([*argv, "--image-size", "16", "--epochs", "1"], capsys)[0] == 0
    code, _, err = run([*argv, "--image-size", "8", "--epochs", "2", "--resume", "--force"], capsys)
    assert code == 2 and "--image-size 8 (checkpoint: 16)" in err
    assert load_model(out).options["epochs"] == 1  # the first run's model is left as it was
