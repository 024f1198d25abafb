"""Deferred weight draws of the trace-free BNNN path: same noise, same random stream, value
computed only when read."""

import torch

from bayes_nest.infer.bnnn_elbo import _draw
from bayes_nest.nn import local_reparam
from bayes_nest.nn.local_reparam import DeferredDraw, drawn_value


def test_a_deferred_draw_is_the_eager_draw_and_keeps_the_random_stream():
    loc, scale = torch.randn(5, 3), torch.rand(5, 3) + 0.1
    post_loc, post_scale = loc + 1.0, scale * 2.0
    torch.manual_seed(7)
    eager = loc + scale * torch.randn_like(loc)
    after_eager = torch.randn(4)

    calls = []

    def loc_scale():
        calls.append(1)
        return loc, scale

    torch.manual_seed(7)
    with local_reparam.local_reparameterization():
        draw = _draw(loc_scale, post_loc, post_scale)
        after_deferred = torch.randn(4)
        assert isinstance(draw, DeferredDraw) and draw.shape == loc.shape
        assert not calls  # nothing computed until read
        marginal = local_reparam.marginal_of(draw)
        assert marginal[0] is post_loc and marginal[1] is post_scale
        assert torch.equal(drawn_value(draw), eager)
        assert torch.equal(drawn_value(draw), eager) and len(calls) == 1  # computed once
    assert torch.equal(after_deferred, after_eager)


def test_without_a_handler_the_draw_is_an_eager_tensor():
    loc, scale = torch.zeros(4), torch.full((4,), 2.0)
    torch.manual_seed(3)
    draw = _draw(lambda: (loc, scale), loc, scale)
    torch.manual_seed(3)
    assert torch.equal(draw, 2.0 * torch.randn(4))
    plain = torch.ones(2)
    assert drawn_value(plain) is plain and drawn_value(None) is None
