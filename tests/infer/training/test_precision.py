"""Mixed precision of the training loop: refused off CUDA, inert when off."""

import pytest
import torch

from bayes_nest.infer import FN3Trainer
from bayes_nest.infer.training import Precision
from bayes_nest.models import MLP


@pytest.mark.parametrize("amp", [True, "float16", "bfloat16"])
def test_mixed_precision_needs_cuda(amp):
    with pytest.raises(ValueError, match="CUDA"):
        Precision(amp, torch.device("cpu"))
    with pytest.raises(ValueError, match="CUDA"):
        FN3Trainer(MLP(4, [8], 2, groups=2), amp=amp, device="cpu", progress=False)


def test_an_unknown_precision_is_named():
    with pytest.raises(ValueError, match="float8"):
        Precision("float8", torch.device("cpu"))


def test_full_precision_steps_the_optimizer_as_plain_pytorch():
    torch.manual_seed(0)
    ours, plain = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    plain.load_state_dict(ours.state_dict())
    x = torch.randn(5, 3)
    precision = Precision(False, torch.device("cpu"))
    assert not precision.enabled and precision.state_dict() is None
    for net, step in ((ours, precision), (plain, None)):
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        with precision.autocast():
            loss = net(x).pow(2).mean()
        if step is None:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 0.1)
            opt.step()
        else:
            step.backward(loss)
            step.step(opt, lambda n=net: torch.nn.utils.clip_grad_norm_(n.parameters(), 0.1))
    for a, b in zip(ours.parameters(), plain.parameters(), strict=True):
        assert torch.equal(a, b)
