"""BD-KD's per-sample balance against the rule written out independently, per sample, in numpy.

The rule (kdcore.losses.bdkd module note): student term forward KL where the student's entropy is at most the
teacher's, reverse KL where it is larger; the teacher's term a reverse KL towards the detached student.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.losses import BDKDLoss, build_loss


def softmax(z, temperature):
    e = np.exp(z / temperature - (z / temperature).max())
    return e / e.sum()


def rule_per_sample(s, t, temperature, fw, rw):
    total = 0.0
    for s_i, t_i in zip(s, t):
        q, p = softmax(s_i, temperature), softmax(t_i, temperature)
        h_q, h_p = -(q * np.log(q)).sum(), -(p * np.log(p)).sum()
        if h_q > h_p:
            total += rw * (q * np.log(q / p)).sum()
        else:
            total += fw * (p * np.log(p / q)).sum()
    return temperature**2 * total / len(s)


@pytest.mark.parametrize("temperature, fw, rw", [(1.0, 1.0, 1.0), (4.0, 0.7, 1.3), (2.0, 0.0, 1.0)])
def test_bdkd_matches_rule_values_and_gradients(temperature, fw, rw):
    rng = np.random.default_rng(5)
    s = rng.normal(size=(12, 4)) * rng.uniform(0.2, 3.0, size=(12, 1))  # mixed confidences: both branches
    t = rng.normal(size=(12, 4)) * rng.uniform(0.2, 3.0, size=(12, 1))
    y = torch.tensor(rng.integers(0, 4, 12))
    ts = torch.tensor(s, requires_grad=True)
    loss = build_loss("bdkd", temperature=temperature, forward_weight=fw, reverse_weight=rw)
    value = loss(ts, torch.tensor(t), y)
    assert float(value.detach()) == pytest.approx(rule_per_sample(s, t, temperature, fw, rw), rel=1e-10)
    value.backward()
    # gradient of the rule by central differences
    eps, numeric = 1e-6, np.zeros_like(s)
    for index in np.ndindex(*s.shape):
        up, down = s.copy(), s.copy()
        up[index] += eps
        down[index] -= eps
        numeric[index] = (rule_per_sample(up, t, temperature, fw, rw)
                          - rule_per_sample(down, t, temperature, fw, rw)) / (2 * eps)
    np.testing.assert_allclose(ts.grad.numpy(), numeric, rtol=1e-5, atol=1e-8)


def test_bdkd_uses_both_divergences_and_differs_from_a_fixed_mix():
    rng = np.random.default_rng(6)
    s, t = rng.normal(size=(10, 3)) * 3, rng.normal(size=(10, 3)) * 0.3  # student sharper on most samples
    s[:3] *= 0.05  # ... and flatter on three
    y = torch.zeros(10, dtype=torch.long)
    only_forward = build_loss("bdkd", reverse_weight=0.0)(torch.tensor(s), torch.tensor(t), y)
    only_reverse = build_loss("bdkd", forward_weight=0.0)(torch.tensor(s), torch.tensor(t), y)
    assert float(only_forward) > 0 and float(only_reverse) > 0
    both = build_loss("bdkd")(torch.tensor(s), torch.tensor(t), y)
    assert float(both) == pytest.approx(float(only_forward + only_reverse))
    mix = build_loss("balanced_kl", temperature=1.0)(torch.tensor(s), torch.tensor(t), y)
    assert float(both) != pytest.approx(float(mix))


def test_bdkd_teacher_term_is_reverse_kl_to_detached_student():
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    ts, tt = torch.tensor(s, requires_grad=True), torch.tensor(t, requires_grad=True)
    value = BDKDLoss(temperature=2.0).teacher_term(tt, ts, torch.zeros(5, dtype=torch.long))
    expected = 4.0 * np.mean([(softmax(b, 2.0) * np.log(softmax(b, 2.0) / softmax(a, 2.0))).sum()
                              for a, b in zip(s, t)])
    assert float(value) == pytest.approx(expected, rel=1e-10)
    value.backward()
    assert ts.grad is None and tt.grad is not None
