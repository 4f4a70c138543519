"""The student objective against formulas written here independently (numpy), and its resolution rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcore.config import ConfigError, Section, validate_recipe
from kdcore.losses import FocalLoss
from kdcore.objective import DistillationSection, StudentObjective, build_student_objective


class Student(DistillationSection):
    pass


class Recipe(Section):
    student: Student = Student()


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def ce(s, y):
    return float(np.mean(-np.log(softmax(s)[np.arange(len(y)), y])))


def hinton_kd(s, t, temp):  # T^2 * mean_i KL(softmax(t/T) || softmax(s/T))
    p, q = softmax(t / temp), softmax(s / temp)
    return temp**2 * float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def mdistiller_dkd(s, t, y, alpha, beta, temp):
    """mdistiller's dkd_loss transliterated (the -1000 mask and all), for moderate logits."""
    gt = np.eye(s.shape[1])[y]
    ps, pt = softmax(s / temp), softmax(t / temp)
    bs = np.stack([(ps * gt).sum(1), (ps * (1 - gt)).sum(1)], 1)
    bt = np.stack([(pt * gt).sum(1), (pt * (1 - gt)).sum(1)], 1)
    tckd = np.sum(bt * (np.log(bt) - np.log(bs))) * temp**2 / len(y)
    pt2 = softmax(t / temp - 1000.0 * gt)
    log_ps2 = np.log(softmax(s / temp - 1000.0 * gt) + 1e-300)
    nckd = np.sum(np.where(pt2 > 0, pt2 * (np.log(pt2 + 1e-300) - log_ps2), 0.0)) * temp**2 / len(y)
    return alpha * tckd + beta * nckd


@pytest.fixture
def batch():
    rng = np.random.default_rng(7)
    s, t = rng.normal(size=(6, 5)) * 2, rng.normal(size=(6, 5)) * 2
    y = rng.integers(0, 5, size=6)
    return s, t, y, torch.tensor(s), torch.tensor(t), torch.tensor(y)


def test_kd_oct_weights_and_temperature(batch):
    s, t, y, ts, tt, ty = batch
    student = Student(kd_loss="kd", ce_weight=0.3, kd_weight=0.7, temperature=4.0)
    value = float(build_student_objective(student)(ts, tt, ty))
    assert value == pytest.approx(0.3 * ce(s, y) + 0.7 * hinton_kd(s, t, 4.0), rel=1e-10)


def test_alpha_is_shorthand_for_the_two_weights(batch):
    s, t, y, ts, tt, ty = batch
    student = Student(alpha=0.25, temperature=2.0)
    assert (student.alpha, student.ce_weight, student.kd_weight) == (None, 0.25, 0.75)
    value = float(build_student_objective(student)(ts, tt, ty))
    assert value == pytest.approx(0.25 * ce(s, y) + 0.75 * hinton_kd(s, t, 2.0), rel=1e-10)


def test_dkd_runs_as_published_one_to_one_with_twenty_epoch_warmup(batch):
    s, t, y, ts, tt, ty = batch
    student = Student(kd_loss="dkd")
    assert (student.ce_weight, student.kd_weight, student.kd_warmup_epochs, student.temperature) == (1, 1, 20, 4)
    objective = build_student_objective(student)
    dkd = mdistiller_dkd(s, t, y, 1.0, 8.0, 4.0)
    for epoch in (0, 4, 18, 19, 30):  # mdistiller: min(epoch / warmup, 1) with epochs counted from 1
        objective.set_epoch(epoch)
        expected = ce(s, y) + min((epoch + 1) / 20.0, 1.0) * dkd
        assert float(objective(ts, tt, ty)) == pytest.approx(expected, rel=1e-9), epoch


def test_temperature_resolution():
    assert Student(kd_loss="nkd").temperature == 1.0          # NKD's published T = 1 is kept, not made 4
    assert Student(kd_loss="reverse_kl").temperature == 1.0
    assert Student(kd_loss="kd").temperature == 4.0
    assert Student(kd_loss="nkd", temperature=2.0).temperature == 2.0           # the recipe's value applies
    both = Student(kd_loss="dkd", temperature=2.0, kd_loss_params={"temperature": 3.0, "beta": 2.0})
    assert both.temperature == 3.0 and both.kd_loss_params == {"beta": 2.0}     # kd_loss_params wins
    assert build_student_objective(both).distill.temperature == 3.0
    # resolution is idempotent: the resolved section validates to itself
    assert Student(**both.model_dump()).model_dump() == both.model_dump()


def test_nkd_default_weights_and_temperature(batch):
    _, _, _, ts, tt, ty = batch
    objective = build_student_objective(Student(kd_loss="nkd"))
    assert (objective.ce_weight, objective.kd_weight, objective.distill.temperature) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("section, message", [
    ({"alpha": 0.3, "ce_weight": 1.0}, "student.alpha: set either alpha"),
    ({"kd_loss_params": {"temp": 2}},
     "student.kd_loss_params.temp: unknown argument of loss 'kd' (did you mean 'temperature'?)"),
    ({"kd_loss": "dkd", "kd_loss_params": {"beta": -1}},
     "student.kd_loss_params.beta: beta must be a finite number >= 0"),
    ({"kd_loss": "dkd", "kd_loss_params": {"temperature": 0}}, "student.kd_loss_params.temperature: temperature must"),
    ({"kd_loss_params": {"alpha": 0.5}}, "student.kd_loss_params.alpha: the label/distillation balance"),
    ({"kd_loss": "bd_kd"}, "student.kd_loss: unknown distillation loss 'bd_kd'"),
    ({"kd_weight": -1}, "student.kd_weight: must be >= 0, got -1"),
])
def test_invalid_objective_names_the_key(section, message):
    with pytest.raises(ConfigError) as info:
        validate_recipe(Recipe, {"student": section})
    assert message in str(info.value)


def test_warmup_longer_than_training_is_refused():
    class Train(Section):
        epochs: int = 10

    class Trained(DistillationSection):
        train: Train = Train()

    with pytest.raises(ValueError, match="20 is more than train.epochs"):
        Trained(kd_loss="dkd", kd_warmup_epochs=20)
    assert Trained(kd_loss="dkd", kd_warmup_epochs=5).kd_warmup_epochs == 5
    # dkd's published 20 epochs, unset here, become the whole of this 10-epoch training
    assert Trained(kd_loss="dkd").kd_warmup_epochs == 10


def test_objective_refuses_a_hard_label_loss():
    with pytest.raises(TypeError, match="distillation loss"):
        StudentObjective(FocalLoss(), 1.0, 1.0)


def test_focal_normalisation_by_weights_or_batch(batch):
    s, _, y, ts, _, ty = batch
    w = np.array([1.0, 2.0, 0.5, 1.5, 3.0])
    p = softmax(s)[np.arange(len(y)), y]
    per_sample = w[y] * (1 - p) ** 2 * -np.log(p)
    by_weights = float(FocalLoss(2.0, w.tolist())(ts, ty))
    by_batch = float(FocalLoss(2.0, w.tolist(), normalize="batch")(ts, ty))
    assert by_weights == pytest.approx(per_sample.sum() / w[y].sum(), rel=1e-10)
    assert by_batch == pytest.approx(per_sample.mean(), rel=1e-10)  # KD-OCT's focal_loss.mean()
