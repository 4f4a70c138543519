"""Fidelity figures against values computed another way (scipy's entropy, explicit loops)."""

import numpy as np
import pytest
from scipy.stats import entropy

from kdcore.fidelity import classification_fidelity, landmark_fidelity, soft_target_entropy


def _probs(rng, n, c, sharp):
    logits = rng.normal(size=(n, c)) * sharp
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


def test_classification_fidelity_matches_independent_computation():
    rng = np.random.default_rng(0)
    n, classes = 60, ["a", "b", "c"]
    teacher, student = _probs(rng, n, 3, 3.0), _probs(rng, n, 3, 1.0)
    targets = rng.integers(0, 3, n)
    groups = [f"p{i // 3}" for i in range(n)]
    f = classification_fidelity(student, teacher, targets, classes, groups, n_boot=200, seed=1, temperature=4.0)

    agree = [int(np.argmax(s) == np.argmax(t)) for s, t in zip(student, teacher)]
    assert f["agreement"]["value"] == pytest.approx(np.mean(agree))
    assert f["kl"]["value"] == pytest.approx(np.mean([entropy(t, s) for s, t in zip(student, teacher)]))
    t_only = sum(np.argmax(t) == y != np.argmax(s) for s, t, y in zip(student, teacher, targets))
    s_only = sum(np.argmax(s) == y != np.argmax(t) for s, t, y in zip(student, teacher, targets))
    assert f["teacher_right_student_wrong"]["count"] == t_only
    assert f["student_right_teacher_wrong"]["count"] == s_only
    for k, name in enumerate(classes):
        rows = [a for a, y in zip(agree, targets) if y == k]
        assert f["agreement_per_class"][name] == {"agreement": pytest.approx(np.mean(rows)), "n": len(rows)}
    lo, hi = f["agreement"]["ci95"]
    assert lo <= f["agreement"]["value"] <= hi and lo < hi
    lo, hi = f["teacher_right_student_wrong"]["ci95"]
    assert lo <= t_only <= hi
    assert 0 < f["soft_target_entropy"]["value"] < 1


def test_identical_models_agree_fully_with_zero_kl():
    rng = np.random.default_rng(1)
    p = _probs(rng, 20, 4, 2.0)
    f = classification_fidelity(p, p.copy(), rng.integers(0, 4, 20), list("abcd"), list(range(20)), n_boot=0)
    assert f["agreement"] == {"value": 1.0, "ci95": None}
    assert f["kl"]["value"] == pytest.approx(0.0, abs=1e-9)
    assert f["teacher_right_student_wrong"]["count"] == f["student_right_teacher_wrong"]["count"] == 0


def test_soft_targets_flatten_with_temperature():
    teacher = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    values = [soft_target_entropy(teacher, t) for t in (1.0, 4.0, 50.0)]
    assert values[0] < values[1] < values[2] < 1.0
    expected = np.mean([entropy(teacher[i] ** 0.25 / (teacher[i] ** 0.25).sum()) for i in range(2)]) / np.log(3)
    assert values[1] == pytest.approx(expected)


def test_landmark_fidelity_nme_to_teacher_and_where_they_part():
    truth = np.zeros((3, 2, 2))
    truth[:, 1, 0] = 10.0  # two points 10 px apart; scale 10
    teacher = truth.copy()
    student = truth.copy()
    student[0] += 0.5   # 0.05 off the teacher: agrees, both right
    student[1] += 2.0   # 0.2 off: disagrees, teacher right, student wrong
    teacher[2] += 3.0   # teacher wrong (0.3), student right
    f = landmark_fidelity(student, teacher, truth, np.full(3, 10.0), ["s1", "s2", "s3"], threshold=0.1, n_boot=0)
    d = np.sqrt(2) / 10
    assert f["nme_to_teacher"]["value"] == pytest.approx(np.mean([0.5 * d, 2.0 * d, 3.0 * d]))
    assert f["agreement"]["value"] == pytest.approx(1 / 3)
    assert f["teacher_right_student_wrong"]["count"] == 1
    assert f["student_right_teacher_wrong"]["count"] == 1
    assert f["kl"] is None
