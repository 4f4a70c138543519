"""USKD against a transliteration of the authors' USKDLoss (yzd-v/cls_KD, mmcls/models/dis_losses/uskd.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdcore.losses import USKDLoss, build_loss, self_distillation_losses


def authors_uskd(fea_mid, logit_s, gt_label, fc, alpha=1.0, beta=0.1, mu=0.005):
    """The official forward for hard labels, line by line (``.cuda()`` dropped)."""
    num_classes = logit_s.shape[1]
    zipf = 1 / torch.arange(1, num_classes + 1, dtype=logit_s.dtype)
    label = gt_label.view(len(gt_label), 1)
    value = torch.ones_like(label)
    N, c = logit_s.shape
    s_i = F.softmax(logit_s, dim=1)
    s_t = torch.gather(s_i, 1, label)
    p_t = s_t**2
    p_t = p_t + value - p_t.mean(0, True)
    p_t[value == 0] = 0
    p_t = p_t.detach()
    s_i = F.log_softmax(logit_s, dim=1)
    s_t = torch.gather(s_i, 1, label)
    loss_t = - (p_t * s_t).sum(dim=1).mean()
    target = torch.zeros_like(logit_s).scatter_(1, label, 0.9) + 0.1 * torch.ones_like(logit_s) / c
    w_fc = fc(fea_mid)
    w_i = F.log_softmax(w_fc, dim=1)
    loss_weak = - (mu * target * w_i).sum(dim=1).mean()
    w_i = F.softmax(w_fc, dim=1)
    w_t = torch.gather(w_i, 1, label)
    rank = w_i / (1 - w_t.sum(1, True) + 1e-6) + s_i / (1 - s_t.sum(1, True) + 1e-6)
    _, rank = torch.sort(rank, descending=True, dim=-1)
    z_i = zipf.repeat(N, 1)
    ids_sort = torch.argsort(rank)
    z_i = torch.gather(z_i, dim=1, index=ids_sort)
    mask = torch.ones_like(logit_s).scatter_(1, label, 0).bool()
    logit_s = logit_s[mask].reshape(N, -1)
    ns_i = F.log_softmax(logit_s, dim=1)
    nz_i = z_i[mask].reshape(N, -1)
    nz_i = nz_i / nz_i.sum(dim=1, keepdim=True)
    nz_i = nz_i.detach()
    loss_non = - (nz_i * ns_i).sum(dim=1).mean()
    return alpha * loss_t + beta * loss_non + loss_weak


@pytest.mark.parametrize("seed, n_classes, params", [(0, 4, {}), (1, 7, {}), (2, 5, {"alpha": 0.5, "beta": 1.0,
                                                                                      "mu": 0.1})])
def test_uskd_matches_authors_code_values_and_gradients(seed, n_classes, params):
    torch.manual_seed(seed)
    batch, width = 9, 6
    ours = build_loss("uskd", **params).bind(width, n_classes).double()
    logits = (torch.randn(batch, n_classes, dtype=torch.float64) * 2).requires_grad_()
    feature = torch.randn(batch, width, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, n_classes, (batch,))
    fc = torch.nn.Linear(width, n_classes).double()
    fc.load_state_dict(ours.fc.state_dict())

    value = ours(logits, target, feature)
    grads = torch.autograd.grad(value, [logits, feature, ours.fc.weight, ours.fc.bias])
    logits2, feature2 = logits.detach().clone().requires_grad_(), feature.detach().clone().requires_grad_()
    reference = authors_uskd(feature2, logits2, target, fc, **params)
    ref_grads = torch.autograd.grad(reference, [logits2, feature2, fc.weight, fc.bias])

    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-10, abs=1e-12)
    for ours_grad, ref_grad in zip(grads, ref_grads):
        torch.testing.assert_close(ours_grad, ref_grad, rtol=1e-9, atol=1e-12)


def test_uskd_pools_feature_maps_and_is_teacher_free():
    torch.manual_seed(3)
    loss = USKDLoss().bind(5, 3)
    fmap = torch.randn(4, 5, 3, 3)
    logits, target = torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    pooled = float(loss(logits, target, fmap.mean((2, 3))).detach())
    assert float(loss(logits, target, fmap).detach()) == pytest.approx(pooled)
    assert USKDLoss.uses_teacher is False and USKDLoss.uses_feature is True
    assert self_distillation_losses() == ["uskd"]
    assert (loss.alpha, loss.beta, loss.mu) == (1.0, 0.1, 0.005)  # the authors' defaults


def test_uskd_needs_bind_and_matching_classes():
    with pytest.raises(RuntimeError, match="bind"):
        USKDLoss()(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(2, 4))
    with pytest.raises(ValueError, match="3 classes, the weak classifier 4"):
        USKDLoss().bind(4, 4)(torch.randn(2, 3), torch.tensor([0, 1]), torch.randn(2, 4))
