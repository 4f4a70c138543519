"""FitNets hint loss against the paper's definition: L = mean (r(v) - u)^2 with r the learned regressor."""

from __future__ import annotations

import pytest
import torch

from kdcore.features import Projector
from kdcore.losses import HintLoss, build_loss


def test_hint_linear_matches_formula_and_gradients():
    torch.manual_seed(0)
    loss = build_loss("hint").bind((5, 4), (5, 7)).double()
    s = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(5, 7, dtype=torch.float64)
    W, b = loss.projector.layer.weight, loss.projector.layer.bias
    value = loss(s, t, None)
    grads = torch.autograd.grad(value, [s, W, b])
    # independent: explicit regressor, explicit squared error, hand-derived gradients
    r = s.detach() @ W.detach().T + b.detach()
    diff = r - t
    assert float(value.detach()) == pytest.approx(float((diff**2).sum() / diff.numel()), rel=1e-12)
    g_r = 2 * diff / diff.numel()
    torch.testing.assert_close(grads[0], g_r @ W.detach())
    torch.testing.assert_close(grads[1], g_r.T @ s.detach())
    torch.testing.assert_close(grads[2], g_r.sum(0))


def test_hint_conv_map_matches_einsum_and_resizes_space():
    torch.manual_seed(1)
    loss = HintLoss().bind((2, 3, 8, 8), (2, 5, 4, 4)).double()
    s = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    t = torch.randn(2, 5, 4, 4, dtype=torch.float64)
    weight = loss.projector.layer.weight.detach()[:, :, 0, 0]  # (5, 3): a 1x1 convolution
    pooled = s.detach().reshape(2, 3, 4, 2, 4, 2).mean((3, 5))  # 2x2 average pooling to the teacher's 4x4
    r = torch.einsum("oc,bchw->bohw", weight, pooled)
    value = loss(s, t)
    assert float(value.detach()) == pytest.approx(float(((r - t) ** 2).mean()), rel=1e-12)
    value.backward()
    assert s.grad is not None and loss.projector.layer.weight.grad is not None


def test_projector_shapes_and_errors():
    assert isinstance(Projector.for_shapes((1, 4), (1, 4), identity_if_equal=True).layer, torch.nn.Identity)
    assert isinstance(Projector.for_shapes((1, 4), (1, 4)).layer, torch.nn.Linear)
    with pytest.raises(ValueError, match=r"cannot project a student feature of shape \(2, 4\)"):
        Projector.for_shapes((2, 4), (2, 3, 2, 2))
    with pytest.raises(RuntimeError, match="bind"):
        HintLoss()(torch.randn(2, 3), torch.randn(2, 3))
