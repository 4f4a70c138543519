"""DML's mimicry term against the paper's formula (Zhang et al. 2018, eq. 1-2: L_1 = L_C1 + D_KL(p2 || p1))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.losses import build_loss, online_losses


def paper_dml(z1: np.ndarray, z2: np.ndarray, temperature: float) -> float:
    """D_KL(p2 || p1) = sum_i sum_m p2^m log(p2^m / p1^m), averaged over the batch, times T^2."""
    def softmax(z):
        e = np.exp(z / temperature - (z / temperature).max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    p1, p2 = softmax(z1), softmax(z2)
    return float(temperature**2 * (p2 * np.log(p2 / p1)).sum(1).mean())


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_dml_matches_paper_value_and_gradient(temperature):
    rng = np.random.default_rng(4)
    z1, z2 = rng.normal(size=(8, 5)) * 2, rng.normal(size=(8, 5)) * 2
    y = torch.tensor(rng.integers(0, 5, 8))
    s = torch.tensor(z1, requires_grad=True)
    peer = torch.tensor(z2, requires_grad=True)
    value = build_loss("dml", temperature=temperature)(s, peer, y)
    assert float(value.detach()) == pytest.approx(paper_dml(z1, z2, temperature), rel=1e-10)
    value.backward()
    # d/dz1 of T^2 * mean KL(p2 || p1) = T * (p1 - p2) / B
    p1 = torch.softmax(torch.tensor(z1) / temperature, 1)
    p2 = torch.softmax(torch.tensor(z2) / temperature, 1)
    torch.testing.assert_close(s.grad, temperature * (p1 - p2) / 8)
    assert peer.grad is None  # the peer is detached: each network learns only from its own term


def test_dml_is_online_only():
    assert set(online_losses()) == {"dml", "bdkd"}
