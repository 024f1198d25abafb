"""The ordered-VAE benchmark's measurement: the truncated ELBO against Pyro's ELBO of a VAE with
k latents, and the summary figures against a hand computation."""

import json
import sys
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import TraceMeanField_ELBO

from bayes_nest.testing import assert_close

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import ordered_vae  # noqa: E402


def test_truncated_elbo_is_the_elbo_of_the_first_k_latents():
    torch.manual_seed(0)
    vae = ordered_vae.VAE(4, features=6, hidden=8)
    x = (torch.rand(5, 6) > 0.5).float()
    k = 2

    def model():
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([k]).to_event(1))
            padded = torch.cat([z, z.new_zeros(z.shape[:-1] + (4 - k,))], -1)
            pyro.sample("x", dist.Bernoulli(logits=vae.decoder(padded)).to_event(1), obs=x)

    def guide():
        loc, scale = vae.encode(x)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(loc[:, :k], scale[:, :k]).to_event(1))

    pyro.set_rng_seed(1)
    elbo = TraceMeanField_ELBO(num_particles=20000, vectorize_particles=True)
    with torch.no_grad():
        pyro_value = -elbo.loss(model, guide) / len(x)
        torch.manual_seed(2)
        ours = vae.truncated_elbo(x, k, samples=20000).mean().item()
    # two Monte Carlo estimates of the same expectation (20000 draws each)
    assert abs(ours - pyro_value) < 0.02 * abs(pyro_value)


def test_summary_figures_by_hand():
    rows = [
        {"seed": s, "k": k, "nested_elbo": n, "ordinary_elbo": o, "independent_elbo": i}
        for s, k, n, o, i in [
            (0, 1, -22.0, -30.0, -20.0),
            (1, 1, -21.0, -28.0, -20.0),
            (0, 8, -18.0, -18.0, -18.0),
            (1, 8, -18.9, -18.0, -18.0),
        ]
    ]
    table, summary = ordered_vae.summarize(rows, [1, 8])
    # k = 1: gaps 2/20 and 1/20 -> mean 0.075; k = 8: 0 and 0.9/18 -> 0.025
    assert_close(summary["max_elbo_gap_frac"], 0.075, dtype=torch.float64)
    assert_close(table[1]["elbo_gap_frac"], 0.025, dtype=torch.float64)
    # excess over the independent VAE, k < 8 only: ordinary 10 + 8, nested 2 + 1
    assert_close(summary["truncation_gain"], 6.0, dtype=torch.float64)


@pytest.mark.slow
def test_quick_run_writes_the_result_and_the_figure(tmp_path):
    out = tmp_path / "ordered_vae_quick.json"
    result = ordered_vae.main(["--quick", "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["config"]["protocol_version"] == 2
    assert set(saved["summary"]) >= {"max_elbo_gap_frac", "truncation_gain"}
    assert (tmp_path / "ordered_vae_quick_reconstructions.png").stat().st_size > 0
    # even the short run: truncating the ordinary VAE costs more than truncating the nested one
    assert result["summary"]["truncation_gain"] > 1
