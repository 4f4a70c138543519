"""ND loss and the teacher's class means against transliterations of WangYZ1608/Knowledge-Distillation-via-ND
(``CIFAR/utils.py`` DirectNormLoss, ``CIFAR/emb_fea_distribution.py`` emb_fea)."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from kdcore.errors import DataError
from kdcore.losses import NDLoss, build_loss, class_mean_embeddings, feature_losses
from kdcore.teacher import FrozenTeacher


def authors_nd(s_emb, t_emb, T_EMB, labels, nd_loss_factor=1.0):
    """DirectNormLoss.forward, ``.cuda()`` dropped; T_EMB maps str(class) to the mean embedding (a list)."""
    assert s_emb.size() == t_emb.size()
    loss = 0.0
    for s, t, i in zip(s_emb, t_emb, labels):
        i = i.item()
        center = torch.tensor(T_EMB[str(i)], dtype=s.dtype)
        e_c = center / center.norm(p=2)
        max_norm = max(s.norm(p=2), t.norm(p=2))
        loss += 1 - torch.dot(s, e_c) / max_norm
    return loss * nd_loss_factor / len(labels)


def authors_class_means(model, loader):
    """emb_fea: per class and dimension, the mean of the training embeddings (their 4-digit rounding dropped)."""
    EMB = {}
    with torch.no_grad():
        for images, labels in loader:
            emb_fea = model.forward_head(model.forward_features(images), pre_logits=True)
            for emb, i in zip(emb_fea, labels):
                EMB.setdefault(str(i.item()), [[] for _ in range(len(emb))])
                for j in range(len(emb)):
                    EMB[str(i.item())][j].append(emb[j].item())
    return {key: [float(np.mean(v)) for v in value] for key, value in EMB.items()}


@pytest.mark.parametrize("seed", [0, 1])
def test_nd_matches_authors_code_values_and_gradients(seed):
    torch.manual_seed(seed)
    batch, width, n_classes = 10, 6, 4
    means = {str(c): torch.randn(width, dtype=torch.float64).tolist() for c in range(n_classes)}
    s = (torch.randn(batch, width, dtype=torch.float64) * torch.rand(batch, 1, dtype=torch.float64) * 3)
    s.requires_grad_()
    t = torch.randn(batch, width, dtype=torch.float64)
    y = torch.randint(0, n_classes, (batch,))
    loss = build_loss("nd").bind(s.shape, t.shape)
    loss.set_class_means(torch.tensor([means[str(c)] for c in range(n_classes)], dtype=torch.float64))
    value = loss(s, t, y)
    (grad,) = torch.autograd.grad(value, s)
    s2 = s.detach().clone().requires_grad_()
    reference = authors_nd(s2, t, means, y)
    (ref_grad,) = torch.autograd.grad(reference, s2)
    assert float(value.detach()) == pytest.approx(float(reference.detach()), rel=1e-6)  # means kept in float32
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_nd_projects_a_narrower_student_embedding():
    torch.manual_seed(2)
    loss = NDLoss().bind((3, 4), (3, 6))
    loss.set_class_means(torch.randn(2, 6))
    s, t, y = torch.randn(3, 4), torch.randn(3, 6), torch.tensor([0, 1, 1])
    means = {str(c): loss.class_means[c].tolist() for c in range(2)}
    projected = loss.projector(s)
    assert float(loss(s, t, y).detach()) == pytest.approx(float(authors_nd(projected, t, means, y).detach()), rel=1e-5)
    assert sum(p.numel() for p in loss.parameters()) == 4 * 6 + 6  # the learned linear map
    assert sum(p.numel() for p in NDLoss().bind((3, 6), (3, 6)).parameters()) == 0  # equal widths: none


def test_class_means_match_authors_per_class_average_and_use_only_the_given_loader():
    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", num_classes=3).eval()
    images, labels = torch.randn(12, 3, 32, 32), torch.tensor([0, 1, 2] * 4)
    loader = DataLoader(TensorDataset(images, labels), batch_size=5)
    ours = class_mean_embeddings(FrozenTeacher(model), loader, n_classes=3)
    reference = authors_class_means(model, loader)
    torch.testing.assert_close(ours, torch.tensor([reference[str(c)] for c in range(3)]), rtol=1e-5, atol=1e-6)
    # dict batches, and another subset of images gives other means (nothing is cached or shared)
    dict_loader = [{"image": images[:6], "target": labels[:6]}]
    subset = class_mean_embeddings(model, dict_loader, n_classes=3)
    assert not torch.allclose(subset, ours)


def test_class_means_refuse_a_class_without_training_images():
    model = timm.create_model("test_efficientnet", num_classes=3)
    with pytest.raises(DataError, match=r"class index \[2\]"):
        class_mean_embeddings(model, [(torch.randn(2, 3, 32, 32), torch.tensor([0, 1]))], n_classes=3)


def test_nd_is_a_feature_loss_and_needs_its_class_means():
    assert feature_losses() == ["hint", "nd"]
    with pytest.raises(RuntimeError, match="set_class_means"):
        NDLoss()(torch.randn(2, 3), torch.randn(2, 3), torch.tensor([0, 1]))
