"""Objective keys of issue 13: feature_loss/feature_weight/feature_params, kd_loss uskd, distillation mode."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

from kdcore.config import ConfigError, KeyedValueError, Section, validate_recipe
from kdcore.features import FeatureTaps
from kdcore.losses import HintLoss, KDLoss, USKDLoss
from kdcore.objective import (DistillationSection, StudentObjective, build_student_objective, needs_teacher,
                              validate_distillation_mode)
from kdcore.teacher import FrozenTeacher


class Student(DistillationSection):
    pass


class Recipe(Section):
    student: Student = Student()


def test_defaults_build_the_objective_of_before():
    section = Student()
    assert (section.feature_loss, section.feature_params, section.feature_path) == (None, {}, None)
    objective = build_student_objective(section)
    assert objective.feature_loss is None and not objective.has_parameters and objective.uses_teacher
    torch.manual_seed(0)
    s, t, y = torch.randn(5, 3), torch.randn(5, 3), torch.tensor([0, 1, 2, 1, 0])
    reference = StudentObjective(KDLoss(alpha=0.0), ce_weight=0.3, kd_weight=0.7)
    assert float(objective(s, t, y)) == float(reference(s, t, y))  # positional call, same value
    assert needs_teacher(section)


def test_feature_keys_resolve_to_published_weights():
    assert Student(feature_loss="nd").feature_weight == 1.0
    assert Student(feature_loss="hint", feature_weight=0.5).feature_weight == 0.5
    assert Student(feature_loss="hint", feature_path="layer3").teacher_feature_path is None
    assert Student(feature_loss="nd").feature_path == "pooled"
    assert Student(kd_loss="uskd").feature_path == "stage:-2"  # the authors' penultimate stage


@pytest.mark.parametrize("section, message", [
    ({"feature_loss": "ndd"}, "student.feature_loss: unknown feature loss 'ndd' (did you mean 'nd'?)"),
    ({"feature_loss": "nd", "feature_params": {"scale": 2}}, "student.feature_params.scale: unknown argument of "
                                                             "loss 'nd'; valid: none"),
    ({"feature_params": {"x": 1}}, "student.feature_params: set feature_loss"),
    ({"feature_loss": "hint", "feature_weight": -1}, "student.feature_weight: must be >= 0"),
    ({"kd_loss": "uskd", "feature_loss": "nd"}, "student.feature_loss: 'nd' needs a teacher's features"),
    ({"kd_loss": "uskd", "temperature": 2.0}, "student.temperature: loss 'uskd' takes no temperature"),
    ({"kd_loss": "uskd", "kd_loss_params": {"mu": -1}}, "student.kd_loss_params.mu: mu must be a finite number"),
])
def test_invalid_feature_keys_name_the_key(section, message):
    with pytest.raises(ConfigError) as info:
        validate_recipe(Recipe, {"student": section})
    assert message in str(info.value)


def test_uskd_needs_no_teacher_and_trains_its_weak_classifier():
    section = Student(kd_loss="uskd")
    assert not needs_teacher(section) and (section.ce_weight, section.kd_weight) == (1.0, 1.0)
    student = timm.create_model("resnet10t", num_classes=3)
    objective = build_student_objective(section).bind_models(student, None, torch.zeros(2, 3, 32, 32))
    assert not objective.uses_teacher and objective.has_parameters
    assert isinstance(objective.distill, USKDLoss) and objective.distill.fc.in_features == 256  # layer3 of 4
    taps = objective.tap(student)
    images, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    logits = student(images)
    feature = taps["stage:-2"]
    assert feature.shape[:2] == (4, 256)
    value = objective(logits, None, y, student_features=feature)
    expected = F.cross_entropy(logits, y) + objective.distill(logits, y, feature)
    assert float(value.detach()) == pytest.approx(float(expected.detach()))
    value.backward()
    assert objective.distill.fc.weight.grad is not None and student.fc.weight.grad is not None


def test_hint_objective_adds_weighted_feature_term():
    torch.manual_seed(0)
    section = Student(feature_loss="hint", feature_weight=0.25)
    student = timm.create_model("resnet10t", num_classes=3)
    teacher = timm.create_model("test_efficientnet", num_classes=3).eval()
    objective = build_student_objective(section).bind_models(student, teacher, torch.zeros(2, 3, 32, 32))
    assert isinstance(objective.feature_loss, HintLoss)
    assert objective.feature_loss.projector.layer.weight.shape == (256, 512)  # student 512 -> teacher 256
    s_taps, t_taps = FeatureTaps(student, ("pooled",)), FeatureTaps(teacher, ("pooled",))
    images, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    s, t = student(images), teacher(images).detach()
    s_f, t_f = s_taps["pooled"], t_taps["pooled"].detach()
    value = objective(s, t, y, student_features=s_f, teacher_features=t_f)
    without = StudentObjective(objective.distill, objective.ce_weight, objective.kd_weight)(s, t, y)
    assert float((value - without).detach()) == pytest.approx(
        0.25 * float(objective.feature_loss(s_f, t_f, y).detach()), rel=1e-5)
    with pytest.raises(ValueError, match="needs student_features and teacher_features"):
        objective(s, t, y)
    assert set(student.state_dict()) == set(timm.create_model("resnet10t", num_classes=3).state_dict())


def test_nd_objective_takes_class_means():
    objective = build_student_objective(Student(feature_loss="nd"))
    objective.bind((2, 4), (2, 4))
    objective.set_class_means(torch.eye(3, 4))
    assert torch.equal(objective.feature_loss.class_means, torch.eye(3, 4))


@pytest.mark.parametrize("mode, section, key, message", [
    ("offline", {"kd_loss": "dml"}, "student.kd_loss", "needs distillation: online"),
    ("offline", {"kd_loss": "bdkd"}, "student.kd_loss", "needs distillation: online"),
    ("online", {"kd_loss": "kd"}, "student.kd_loss", "with bdkd or dml, not 'kd'"),
    ("online", {"kd_loss": "dml", "feature_loss": "hint"}, "student.feature_loss", "not supported"),
])
def test_distillation_mode_refusals_name_the_key(mode, section, key, message):
    with pytest.raises(KeyedValueError, match=message) as info:
        validate_distillation_mode(mode, Student(**section))
    assert info.value.key == key


def test_distillation_mode_accepts():
    validate_distillation_mode("offline", Student())
    validate_distillation_mode("offline", Student(kd_loss="uskd"))
    validate_distillation_mode("online", Student(kd_loss="dml"))
    validate_distillation_mode("online", Student(kd_loss="bdkd"))


def test_feature_terms_under_bfloat16_autocast_are_float32_and_finite(one_thread):
    torch.manual_seed(0)
    student = timm.create_model("resnet10t", num_classes=3)
    teacher = FrozenTeacher(timm.create_model("test_efficientnet", num_classes=3), amp_dtype=torch.bfloat16,
                            features=("pooled",))
    images, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    for section in (Student(feature_loss="hint"), Student(feature_loss="nd"), Student(kd_loss="uskd")):
        objective = build_student_objective(section).bind_models(student, teacher, images)
        if section.feature_loss == "nd":
            objective.set_class_means(torch.randn(3, 256))
        taps = objective.tap(student)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = student(images)
            teacher_logits = teacher(images) if objective.uses_teacher else None
            value = objective(logits, teacher_logits, y, **objective.feature_kwargs(taps, teacher))
        assert value.dtype == torch.float32 and torch.isfinite(value), section.kd_loss
        value.backward()
        taps.remove()
