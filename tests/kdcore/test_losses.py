"""kdcore.losses: golden values from independent numpy formulas, identities, numerics and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdcore.errors import ConfigError
from kdcore.losses import (BalancedDivergenceLoss, CrossEntropyLoss, DKDLoss, FocalLoss, KDLoss, NKDLoss,
                           ReverseKLLoss, WithHardLabel, balanced_class_weights, build_loss, dkd_terms, forward_kl,
                           list_losses, register_loss, reverse_kl)
from kdcore.losses import _registry

# ---------------------------------------------------------------- independent numpy references (float64)


def np_softmax(x: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = x / temperature
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def np_kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Per-row KL(p || q) from probabilities."""
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


def np_ce(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -np.log(np_softmax(logits)[np.arange(len(y)), y])


def np_dkd_official(s, t, y, alpha, beta, temp):
    """DKD as the official code writes it: masked sums of probabilities, then target logit minus 1000."""
    gt = np.zeros_like(s)
    gt[np.arange(len(y)), y] = 1.0
    ps, pt = np_softmax(s, temp), np_softmax(t, temp)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], axis=1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], axis=1)
    tckd = (bt * np.log(bt / bs)).sum() * temp**2 / len(y)
    ps2, pt2 = np_softmax(s / temp - 1000.0 * gt), np_softmax(t / temp - 1000.0 * gt)
    keep = gt == 0  # the masked entries are exp(-1000) ~ 0; drop them instead of 0 * log 0
    nckd = (pt2[keep] * np.log(pt2[keep] / ps2[keep])).sum() * temp**2 / len(y)
    return alpha * tckd + beta * nckd


def np_nkd_paper(s, t, y, temp, gamma):
    """NKD by the paper's formula: renormalise the full-softmax non-target probabilities by 1 - p_target."""
    rows = np.arange(len(y))
    ps, pt = np_softmax(s), np_softmax(t)
    target_term = -pt[rows, y] * np.log(ps[rows, y])
    ps_t, pt_t = np_softmax(s, temp), np_softmax(t, temp)
    total = 0.0
    for i, label in enumerate(y):
        others = [c for c in range(s.shape[1]) if c != label]
        q_norm = ps_t[i, others] / (1.0 - ps_t[i, label])
        p_norm = pt_t[i, others] / (1.0 - pt_t[i, label])
        total += target_term[i] - gamma * temp**2 * (p_norm * np.log(q_norm)).sum()
    return total / len(y)


def random_batch(seed: int, batch: int = 6, n_classes: int = 5, scale: float = 3.0, dtype=torch.float64):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=(batch, n_classes)) * scale
    t = rng.normal(size=(batch, n_classes)) * scale
    y = rng.integers(0, n_classes, size=batch)
    return s, t, y, torch.tensor(s, dtype=dtype), torch.tensor(t, dtype=dtype), torch.tensor(y, dtype=torch.long)


# ---------------------------------------------------------------- golden values


def test_kd_hand_computed_example():
    # teacher uniform, student q = [1/4, 3/4]: KL(p||q) = 0.5 ln 2 + 0.5 ln(2/3); CE on label 1 = -ln(3/4)
    s = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)
    t = torch.zeros(1, 2, dtype=torch.float64)
    y = torch.tensor([1])
    kl = 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)
    expected = 0.3 * -math.log(0.75) + 0.7 * 1.0 * kl
    assert float(KDLoss(temperature=1.0, alpha=0.3)(s, t, y)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature,alpha", [(1.0, 0.0), (4.0, 0.3), (2.5, 1.0), (0.5, 0.7)])
def test_kd_matches_numpy(temperature, alpha):
    s, t, y, ts, tt, ty = random_batch(1)
    kl = np_kl(np_softmax(t, temperature), np_softmax(s, temperature)).mean()
    expected = alpha * np_ce(s, y).mean() + (1 - alpha) * temperature**2 * kl
    assert float(KDLoss(temperature, alpha)(ts, tt, ty)) == pytest.approx(expected, rel=1e-10)


def test_kd_gradient_is_temperature_times_probability_gap():
    # d/ds of T^2 * mean KL(p || q) is T * (q - p) / B: a check through autograd, not through the formula
    s, t, y, ts, tt, ty = random_batch(2)
    ts.requires_grad_(True)
    KDLoss(temperature=3.0, alpha=0.0)(ts, tt, ty).backward()
    expected = 3.0 * (np_softmax(s, 3.0) - np_softmax(t, 3.0)) / len(y)
    np.testing.assert_allclose(ts.grad.numpy(), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha,beta,temperature", [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (2.0, 0.5, 7.0)])
def test_dkd_matches_official_formulation(alpha, beta, temperature):
    s, t, y, ts, tt, ty = random_batch(3, n_classes=7)
    expected = np_dkd_official(s, t, y, alpha, beta, temperature)
    assert float(DKDLoss(alpha, beta, temperature)(ts, tt, ty)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_identity_kd_equals_tckd_plus_weighted_nckd(temperature):
    s, t, y, ts, tt, ty = random_batch(4, batch=8, n_classes=6)
    tckd, nckd = dkd_terms(ts, tt, ty, temperature)
    assert tckd.shape == nckd.shape == (8,)
    teacher_target_prob = np_softmax(t, temperature)[np.arange(8), y]
    kd = np_kl(np_softmax(t, temperature), np_softmax(s, temperature))  # numpy, not forward_kl
    np.testing.assert_allclose(tckd.numpy() + (1 - teacher_target_prob) * nckd.numpy(), kd, rtol=1e-9)


def test_dkd_terms_are_unscaled_and_loss_scales_them():
    s, t, y, ts, tt, ty = random_batch(5)
    tckd, nckd = dkd_terms(ts, tt, ty, 4.0)
    loss = DKDLoss(alpha=1.5, beta=3.0, temperature=4.0)(ts, tt, ty)
    assert float(loss) == pytest.approx(float(16.0 * (1.5 * tckd + 3.0 * nckd).mean()), rel=1e-12)


def test_dkd_with_only_the_target_logit_different_has_zero_nckd():
    t = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    s = t.clone()
    s[0, 0] = -4.0
    tckd, nckd = dkd_terms(s, t, torch.tensor([0]), 2.0)
    assert float(nckd) == pytest.approx(0.0, abs=1e-14)
    assert float(tckd) > 0


@pytest.mark.parametrize("temperature,gamma", [(1.0, 1.5), (2.0, 1.0), (4.0, 0.5)])
def test_nkd_matches_paper_formula(temperature, gamma):
    s, t, y, ts, tt, ty = random_batch(6, n_classes=6)
    expected = np_nkd_paper(s, t, y, temperature, gamma)
    assert float(NKDLoss(temperature, gamma)(ts, tt, ty)) == pytest.approx(expected, rel=1e-9)


def test_nkd_hand_computed_uniform_example():
    # uniform over 3 classes: target term 1/3 * ln 3; two non-targets, uniform: cross-entropy ln 2
    s = t = torch.zeros(2, 3)
    y = torch.tensor([0, 2])
    expected = math.log(3.0) / 3.0 + 1.5 * 4.0 * math.log(2.0)
    assert float(NKDLoss(temperature=2.0, gamma=1.5)(s, t, y)) == pytest.approx(expected, rel=1e-6)


def test_nkd_detaches_teacher_target_probability_only():
    s, t, y, ts, tt, ty = random_batch(7)
    tt.requires_grad_(True)
    NKDLoss(temperature=2.0, gamma=0.0)(ts, tt, ty).backward()  # only the (detached) target term is left
    assert torch.count_nonzero(tt.grad) == 0


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_reverse_kl_matches_numpy(temperature):
    s, t, y, ts, tt, ty = random_batch(8)
    expected = temperature**2 * np_kl(np_softmax(s, temperature), np_softmax(t, temperature)).mean()
    assert float(ReverseKLLoss(temperature)(ts, tt, ty)) == pytest.approx(expected, rel=1e-10)


def test_balanced_divergence_is_weighted_sum_of_forward_and_reverse():
    s, t, y, ts, tt, ty = random_batch(9)
    p, q = np_softmax(t, 4.0), np_softmax(s, 4.0)
    expected = 16.0 * (0.25 * np_kl(p, q) + 2.0 * np_kl(q, p)).mean()
    loss = BalancedDivergenceLoss(temperature=4.0, forward_weight=0.25, reverse_weight=2.0)
    assert float(loss(ts, tt, ty)) == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(forward_kl(ts, tt, 4.0).numpy(), np_kl(p, q), rtol=1e-10)
    np.testing.assert_allclose(reverse_kl(ts, tt, 4.0).numpy(), np_kl(q, p), rtol=1e-10)


# ---------------------------------------------------------------- focal, cross-entropy, class weights


# weights exact in float32, the dtype of the class_weights buffer
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 3.0], (0.25, 1.0, 1.0, 4.0)])
def test_focal_matches_numpy(weights):
    s, _, y, ts, _, ty = random_batch(10, batch=9, n_classes=4)
    p_true = np_softmax(s)[np.arange(len(y)), y]
    w = np.ones(4) if weights is None else np.asarray(weights)
    per_sample = -w[y] * (1 - p_true) ** 2.0 * np.log(p_true)
    loss = FocalLoss(gamma=2.0, class_weights=weights)
    assert float(loss(ts, ty)) == pytest.approx(per_sample.sum() / w[y].sum(), rel=1e-10)
    loss_sum = FocalLoss(gamma=2.0, class_weights=weights, reduction="sum")
    assert float(loss_sum(ts, ty)) == pytest.approx(per_sample.sum(), rel=1e-10)
    loss_none = FocalLoss(gamma=2.0, class_weights=weights, reduction="none")
    np.testing.assert_allclose(loss_none(ts, ty).numpy(), per_sample, rtol=1e-10)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weights", [None, [1.0, 2.0, 0.5, 3.0, 0.0]])
def test_focal_with_gamma_zero_equals_cross_entropy(weights, reduction):
    _, _, _, ts, _, ty = random_batch(11, batch=12, n_classes=5, dtype=torch.float32)
    w = None if weights is None else torch.tensor(weights)
    expected = F.cross_entropy(ts, ty, weight=w, reduction=reduction)
    torch.testing.assert_close(FocalLoss(gamma=0.0, class_weights=weights, reduction=reduction)(ts, ty), expected)
    torch.testing.assert_close(CrossEntropyLoss(class_weights=weights, reduction=reduction)(ts, ty), expected)


def test_focal_uses_true_class_probability_not_weighted_ce():
    # one sample: p_t of the true class is 0.5 whatever the weight; the focusing factor must be 0.5^2
    logits = torch.tensor([[0.0, 0.0]])
    y = torch.tensor([0])
    loss = FocalLoss(gamma=2.0, class_weights=[4.0, 1.0], reduction="sum")(logits, y)
    assert float(loss) == pytest.approx(4.0 * 0.25 * math.log(2.0), rel=1e-6)


def test_class_weights_accept_tensor_and_array_and_are_a_buffer():
    for weights in (torch.tensor([1.0, 2.0]), np.array([1.0, 2.0])):
        loss = FocalLoss(class_weights=weights)
        assert "class_weights" in loss.state_dict()
        torch.testing.assert_close(loss.class_weights, torch.tensor([1.0, 2.0]))
    assert "class_weights" not in FocalLoss().state_dict()


@pytest.mark.parametrize("bad", [[1.0, -1.0], [[1.0, 2.0]], [], [1.0, float("nan")]])
def test_invalid_class_weights_rejected(bad):
    with pytest.raises(ValueError, match="class_weights"):
        FocalLoss(class_weights=bad)


def test_class_weights_length_must_match_classes():
    with pytest.raises(ValueError, match=r"3 entries.*\(2, 4\)"):
        FocalLoss(class_weights=[1.0, 1.0, 1.0])(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"3 entries.*\(2, 4\)"):
        CrossEntropyLoss(class_weights=[1.0, 1.0, 1.0])(torch.randn(2, 4), torch.tensor([0, 1]))


def test_balanced_class_weights_hand_values():
    labels = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2, 2, 2]  # counts 4, 2, 6; n = 12
    expected = [12 / (3 * 4), 12 / (3 * 2), 12 / (3 * 6)]
    np.testing.assert_allclose(balanced_class_weights(labels, 3), expected, rtol=1e-12)
    np.testing.assert_allclose(balanced_class_weights(torch.tensor(labels), 3), expected, rtol=1e-12)


def test_balanced_class_weights_errors():
    with pytest.raises(ValueError, match=r"class\(es\) \[1, 3\] have no samples.*\[2, 0, 1, 0\]"):
        balanced_class_weights([0, 0, 2], 4)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        balanced_class_weights([0, 2], 2)
    with pytest.raises(ValueError, match="integer"):
        balanced_class_weights([0.0, 1.0], 2)


# ---------------------------------------------------------------- hard-label wrapper


def test_with_hard_label_equals_kd_alpha():
    _, _, _, ts, tt, ty = random_batch(12)
    wrapped = WithHardLabel(KDLoss(temperature=4.0, alpha=0.0), alpha=0.3)
    torch.testing.assert_close(wrapped(ts, tt, ty), KDLoss(temperature=4.0, alpha=0.3)(ts, tt, ty))


def test_with_hard_label_on_dkd():
    s, t, y, ts, tt, ty = random_batch(13)
    expected = 0.4 * np_ce(s, y).mean() + 0.6 * np_dkd_official(s, t, y, 1.0, 8.0, 4.0)
    assert float(WithHardLabel(DKDLoss(), 0.4)(ts, tt, ty)) == pytest.approx(expected, rel=1e-9)


def test_with_hard_label_rejects_bad_arguments():
    with pytest.raises(TypeError, match="FocalLoss"):
        WithHardLabel(FocalLoss(), 0.5)
    with pytest.raises(ValueError, match="alpha"):
        WithHardLabel(DKDLoss(), 1.5)


# ---------------------------------------------------------------- every registered loss


def call(loss: nn.Module, s: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return loss(s, t, y) if loss.uses_teacher else loss(s, y)


DIVERGENCE_ONLY = {"dkd", "reverse_kl", "balanced_kl"}
# feature losses (nd, hint, uskd) take features and need bind(); their own files test them
LOGIT_LOSSES = [name for name in list_losses() if not getattr(_registry._LOSSES[name], "uses_feature", False)]


def test_registry_names():
    assert {"kd", "dkd", "nkd", "reverse_kl", "balanced_kl", "focal", "ce"} <= set(list_losses())
    assert {"uskd", "nd", "hint", "dml", "bdkd"} <= set(list_losses())  # issue 13; golden tests in test_losses_*.py
    assert list_losses() == sorted(list_losses())


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_every_loss_is_a_finite_non_negative_scalar(name):
    _, _, _, ts, tt, ty = random_batch(14, dtype=torch.float32)
    loss = build_loss(name)
    assert isinstance(loss, nn.Module) and isinstance(loss.uses_teacher, bool)
    assert loss.__doc__ and "=" in loss.__doc__  # the docstring states the formula
    value = call(loss, ts, tt, ty)
    assert value.shape == () and torch.isfinite(value) and value >= -1e-6


@pytest.mark.parametrize("name", sorted(DIVERGENCE_ONLY))
def test_divergence_losses_vanish_when_student_equals_teacher(name):
    _, _, _, ts, _, ty = random_batch(15, dtype=torch.float32)
    assert float(build_loss(name)(ts, ts.clone(), ty)) == pytest.approx(0.0, abs=1e-6)


def test_kd_without_label_term_vanishes_when_student_equals_teacher():
    _, _, _, ts, _, ty = random_batch(16)
    assert float(KDLoss(alpha=0.0)(ts, ts.clone(), ty)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_extreme_logits_give_finite_loss_and_gradients(name):
    torch.manual_seed(0)
    s = (torch.randn(8, 5) * 1e4).requires_grad_(True)
    t = (torch.randn(8, 5) * 1e4).requires_grad_(True)
    y = torch.randint(0, 5, (8,))
    value = call(build_loss(name), s, t, y)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(s.grad).all()
    if t.grad is not None:
        assert torch.isfinite(t.grad).all()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_gradients_finite_when_true_class_is_certain(gamma):
    logits = torch.tensor([[1e4, 0.0, -1e4], [0.0, 30.0, 0.0]], requires_grad=True)
    FocalLoss(gamma=gamma)(logits, torch.tensor([0, 1])).backward()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_bfloat16_inputs(name):
    _, _, _, ts, tt, ty = random_batch(17, dtype=torch.float32)
    loss = build_loss(name)
    reference = call(loss, ts, tt, ty)
    s16 = ts.to(torch.bfloat16).requires_grad_(True)
    value = call(loss, s16, tt.to(torch.bfloat16), ty)
    value.backward()
    assert torch.isfinite(value) and s16.grad.dtype == torch.bfloat16 and torch.isfinite(s16.grad).all()
    assert float(value.detach()) == pytest.approx(float(reference), rel=0.05, abs=0.05)  # bf16 keeps ~3 digits


# ---------------------------------------------------------------- shape and value errors


@pytest.mark.parametrize("name", [n for n in list_losses() if build_loss(n).uses_teacher])
def test_mismatched_logits_name_both_shapes(name):
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(4, 5\)"):
        build_loss(name)(torch.randn(4, 3), torch.randn(4, 5), torch.tensor([0, 1, 2, 0]))


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_target_errors(name):
    loss = build_loss(name)
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"\(4,\).*\(4, 1\)"):
        call(loss, s, t, torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="torch.float32"):
        call(loss, s, t, torch.zeros(4))
    with pytest.raises(ValueError, match=r"\[0, 3\).*\[0, 3\]"):
        call(loss, s, t, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match=r"\(B, C\), got \(12,\)"):
        call(loss, torch.randn(12), torch.randn(12), torch.zeros(12, dtype=torch.long))


def test_losses_needing_non_target_classes_reject_one_class():
    for loss in (DKDLoss(), NKDLoss()):
        with pytest.raises(ValueError, match=r"at least 2 classes.*\(2, 1\)"):
            loss(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([0, 0]))


def test_registry_errors():
    with pytest.raises(ConfigError) as info:
        build_loss("kdd")
    assert "'kd'" in str(info.value)
    assert all(name in str(info.value) for name in list_losses())
    with pytest.raises(ConfigError, match=r"unknown argument 'temp'.*'temperature'"):
        build_loss("dkd", temp=4.0)
    with pytest.raises(ConfigError, match=r"'kd'.*temperature must be a finite number > 0, got -1"):
        build_loss("kd", temperature=-1)
    with pytest.raises(ConfigError, match="reduction"):
        build_loss("focal", reduction="avg")


def test_build_loss_passes_arguments():
    loss = build_loss("dkd", alpha=0.5, beta=2.0, temperature=3.0)
    assert (loss.alpha, loss.beta, loss.temperature) == (0.5, 2.0, 3.0)
    assert isinstance(build_loss("balanced_kl"), BalancedDivergenceLoss)


def test_register_loss(monkeypatch):
    monkeypatch.setattr(_registry, "_LOSSES", dict(_registry._LOSSES))

    @register_loss("test_mse")
    class MSE(nn.Module):
        """``mean (s - t)^2``."""

        uses_teacher = True

        def forward(self, s, t, y):
            return ((s - t) ** 2).mean()

    assert "test_mse" in list_losses()
    assert isinstance(build_loss("test_mse"), MSE)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("kd")(MSE)
    with pytest.raises(TypeError, match="nn.Module"):
        register_loss("test_fn")(lambda s, t, y: s)
