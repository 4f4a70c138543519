"""LandmarkKDLoss against the published KD-Loss code (aliprf/KD-Loss, custom_Losses.kd_loss) and by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from facekd.kd_loss import CODE_CONSTANTS, PAPER_CONSTANTS, L2LandmarkLoss, LandmarkKDLoss


def published_kd_loss(x_pr, x_gt, x_tough, x_tol, alpha_tough=1.9, alpha_mi_tough=-0.45, alpha_tol=1.8,
                      alpha_mi_tol=-0.4, main_loss_weight=2.0, tough_loss_weight=1.0, tol_loss_weight=1.0):
    """Line-by-line numpy transliteration of the TensorFlow kd_loss in the published code."""
    sign, absolute, where, mean = np.sign, np.abs, np.where, np.mean
    x_tough = x_gt + sign(x_pr - x_gt) * absolute(x_tough - x_gt)
    b_tough = x_gt + sign(x_pr - x_gt) * absolute(x_tough - x_gt) * 0.15
    x_tol = x_gt + sign(x_pr - x_gt) * absolute(x_tol - x_gt)
    b_tol = x_gt + sign(x_pr - x_gt) * absolute(x_tol - x_gt) * 0.15
    tou_pos_map = where(sign(x_pr - x_tough) * sign(x_tough - x_gt) > 0, alpha_tough, 0.0)
    tou_neg_map = where(sign(x_tough - x_pr) * sign(x_pr - b_tough) >= 0, alpha_mi_tough, 0.0)
    tou_map = tou_pos_map + tou_neg_map
    tol_pos_map = where(sign(x_pr - x_tol) * sign(x_tol - x_gt) > 0, alpha_tol, 0.0)
    tol_neg_map = where(sign(x_tol - x_pr) * sign(x_pr - b_tol) >= 0, alpha_mi_tol, 0.0)
    tol_map = tol_pos_map + tol_neg_map
    low_diff_main_map = where(absolute(x_gt - x_pr) <= absolute(x_gt - x_tol), 1.0, 0.0)
    high_diff_main_map = where(absolute(x_gt - x_pr) > absolute(x_gt - x_tol), 1.0, 0.0)
    loss_main_high_dif = mean(high_diff_main_map * (np.square(x_gt - x_pr) + (3 * absolute(x_gt - x_tol))
                                                    - np.square(x_gt - x_tol)))
    loss_main_low_dif = mean(low_diff_main_map * (3 * absolute(x_gt - x_pr)))
    loss_main = main_loss_weight * (loss_main_high_dif + loss_main_low_dif)
    loss_tough_assist = tough_loss_weight * mean(tou_map * absolute(x_tough - x_pr))
    loss_tol_assist = tol_loss_weight * mean(tol_map * absolute(x_tol - x_pr))
    return loss_main + loss_tough_assist + loss_tol_assist, loss_main, loss_tough_assist, loss_tol_assist


def _random_batch(seed: int, shape=(6, 136)):
    """Crop-normalised coordinates like the code's (112 - x) / 224, with teachers near the truth."""
    rng = np.random.default_rng(seed)
    gt = rng.uniform(-0.4, 0.4, size=shape)
    tough = gt + rng.normal(scale=0.02, size=shape)
    tolerant = gt + rng.normal(scale=0.04, size=shape)
    student = gt + rng.normal(scale=0.05, size=shape)
    return student, tough, tolerant, gt


def _t(*arrays):
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


@pytest.mark.parametrize("seed", range(5))
def test_matches_the_published_code_on_random_batches(seed):
    student, tough, tolerant, gt = _random_batch(seed)
    # Exact ties exercise the >= / > and sign(0) branches: student on the truth, teachers on the truth.
    student[0, :10] = gt[0, :10]
    tough[1, :10], tolerant[1, 5:15] = gt[1, :10], gt[1, 5:15]
    student[2, :5] = tough[2, :5]
    expected = published_kd_loss(student, gt, tough, tolerant)
    got = LandmarkKDLoss().components(*_t(student, tough, tolerant, gt))
    np.testing.assert_allclose([float(v) for v in got], expected, rtol=1e-12, atol=1e-15)


def test_point_layout_does_not_change_the_value():
    student, tough, tolerant, gt = _t(*_random_batch(7))
    loss = LandmarkKDLoss()
    flat = loss(student, tough, tolerant, gt)
    stacked = loss(*(x.reshape(6, 68, 2) for x in (student, tough, tolerant, gt)))
    assert torch.equal(flat, stacked)


def test_main_loss_is_continuous_at_the_tolerant_boundary():
    loss = LandmarkKDLoss()
    gt = torch.zeros(1, 2, dtype=torch.float64)
    tolerant = torch.full((1, 2), 0.2, dtype=torch.float64)
    tough = torch.full((1, 2), 0.1, dtype=torch.float64)

    def main(e):
        return float(loss.components(torch.full((1, 2), e, dtype=torch.float64), tough, tolerant, gt).main)

    at = main(0.2)
    assert at == pytest.approx(2.0 * 3 * 0.2, rel=1e-12)  # w_main * c * d
    assert main(0.2 + 1e-9) == pytest.approx(at, abs=1e-8)
    assert main(0.2 - 1e-9) == pytest.approx(at, abs=1e-8)
    # Outside the region the loss is quadratic: e^2 + 3d - d^2 at e = 0.5 and d = 0.2.
    assert main(0.5) == pytest.approx(2.0 * (0.25 + 0.6 - 0.04), rel=1e-12)


def test_teachers_on_the_ground_truth_reduce_kd_loss_to_weighted_l2():
    student, _, _, gt = _t(*_random_batch(3))
    parts = LandmarkKDLoss().components(student, gt.clone(), gt.clone(), gt)
    assert float(parts.tough) == 0.0 and float(parts.tolerant) == 0.0
    assert float(parts.main) == pytest.approx(2.0 * float(((student - gt) ** 2).mean()), rel=1e-12)
    assert float(parts.total) == pytest.approx(float(parts.main), rel=1e-12)


def _one(student, tough, tolerant, gt=0.0, **constants):
    t = lambda v: torch.tensor([[v, gt]], dtype=torch.float64)  # noqa: E731 - y coordinate sits on the truth
    return LandmarkKDLoss(**constants).components(t(student), t(tough), t(tolerant), t(gt))


def test_assistive_regions_by_hand_with_the_code_constants():
    # Tough teacher at 0.5; the mean runs over 2 coordinates, the y one contributes 0.
    beyond = _one(0.8, 0.5, 0.0)
    assert float(beyond.tough) == pytest.approx(1.9 * 0.3 / 2)           # pulled back towards the teacher
    between = _one(0.3, 0.5, 0.0)
    assert float(between.tough) == pytest.approx(-0.45 * 0.2 / 2)        # pushed from the teacher to the truth
    inner = _one(0.05, 0.5, 0.0)                                         # inside 0.15 * 0.5 of the truth
    assert float(inner.tough) == 0.0
    on_boundary = _one(0.15 * 0.5, 0.5, 0.0)                              # the code's ">= 0" includes it
    assert float(on_boundary.tough) == pytest.approx(-0.45 * (0.5 - 0.075) / 2)
    expected = published_kd_loss(*(np.array([[v, 0.0]]) for v in (0.15 * 0.5, 0.0, 0.5, 0.0)))
    assert float(on_boundary.tough) == pytest.approx(expected[2], rel=1e-12)
    # The teacher on the other side of the truth is mirrored onto the student's side: same values.
    for s in (0.8, 0.3, 0.05):
        assert float(_one(s, -0.5, 0.0).tough) == float(_one(s, 0.5, 0.0).tough)
    # The Tolerant teacher uses its own weights.
    assert float(_one(0.8, 0.0, 0.5).tolerant) == pytest.approx(1.8 * 0.3 / 2)
    assert float(_one(0.3, 0.0, 0.5).tolerant) == pytest.approx(-0.4 * 0.2 / 2)


def test_paper_constants_are_switchable():
    paper = LandmarkKDLoss.paper()
    for name, value in PAPER_CONSTANTS.items():
        assert getattr(paper, name) == value
    assert LandmarkKDLoss.paper(main_weight=1.0).main_weight == 1.0
    assert PAPER_CONSTANTS["boundary_fraction"] == 0.4 and CODE_CONSTANTS["boundary_fraction"] == 0.15
    # Beyond the teacher: weight 1; between 0.4 * 0.5 = 0.2 and 0.5: weight -0.5; inside 0.2: linear ramp.
    assert float(_one(0.8, 0.5, 0.0, **PAPER_CONSTANTS).tough) == pytest.approx(1.0 * 0.3 / 2)
    assert float(_one(0.3, 0.5, 0.0, **PAPER_CONSTANTS).tough) == pytest.approx(-0.5 * 0.2 / 2)
    assert float(_one(0.1, 0.5, 0.0, **PAPER_CONSTANTS).tough) == pytest.approx(-0.5 * (0.1 / 0.2) * 0.4 / 2)
    assert float(_one(0.1, 0.5, 0.0).tough) == pytest.approx(-0.45 * 0.4 / 2)  # code: 0.1 >= 0.075 -> -0.45
    # Every published-code constant reproduces the code when passed explicitly.
    student, tough, tolerant, gt = _random_batch(11)
    got = LandmarkKDLoss(**CODE_CONSTANTS)(*_t(student, tough, tolerant, gt))
    assert float(got) == pytest.approx(published_kd_loss(student, gt, tough, tolerant)[0], rel=1e-12)


def test_weights_other_than_default_match_the_published_formula():
    student, tough, tolerant, gt = _random_batch(12)
    constants = dict(alpha_tough=1.2, alpha_mi_tough=-0.3, alpha_tol=0.7, alpha_mi_tol=-0.2,
                     main_loss_weight=1.5, tough_loss_weight=0.5, tol_loss_weight=2.0)
    expected = published_kd_loss(student, gt, tough, tolerant, **constants)
    loss = LandmarkKDLoss(tough_pos_weight=1.2, tough_neg_weight=-0.3, tol_pos_weight=0.7, tol_neg_weight=-0.2,
                          main_weight=1.5, tough_weight=0.5, tol_weight=2.0)
    np.testing.assert_allclose([float(v) for v in loss.components(*_t(student, tough, tolerant, gt))], expected,
                               rtol=1e-12)


@pytest.mark.parametrize("constants", [CODE_CONSTANTS, PAPER_CONSTANTS])
def test_gradient_is_finite_and_flows_only_to_the_student(constants):
    student, tough, tolerant, gt = _t(*_random_batch(4))
    student[0, :4] = gt[0, :4]          # zero error
    tough[1], tolerant[1] = gt[1], gt[1]  # teachers exactly on the truth
    student.requires_grad_(True)
    tough.requires_grad_(True)
    tolerant.requires_grad_(True)
    LandmarkKDLoss(**constants)(student, tough, tolerant, gt).backward()
    assert torch.isfinite(student.grad).all() and student.grad.abs().sum() > 0
    assert tough.grad is None and tolerant.grad is None


def test_gradient_pulls_a_student_beyond_the_teacher_back():
    student = torch.tensor([[0.8, 0.0]], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, 2, dtype=torch.float64)
    teacher = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    LandmarkKDLoss().components(student, teacher, zero, zero).tough.backward()
    assert student.grad[0, 0] == pytest.approx(1.9 / 2)  # d/dp 1.9 |0.5 - p| / 2 at p = 0.8


def test_float32_matches_float64():
    batch = _random_batch(5)
    loss = LandmarkKDLoss()
    value64 = float(loss(*_t(*batch)))
    value32 = float(loss(*[torch.tensor(a, dtype=torch.float32) for a in batch]))
    assert value32 == pytest.approx(value64, rel=1e-4)


def test_l2_landmark_loss_is_the_mean_squared_coordinate_error():
    student, _, _, gt = _t(*_random_batch(6))
    l2 = L2LandmarkLoss()
    expected = np.mean((student.numpy() - gt.numpy()) ** 2)
    assert float(l2(student, gt)) == pytest.approx(expected, rel=1e-12)
    assert float(l2(student.reshape(6, 68, 2), gt.reshape(6, 68, 2))) == pytest.approx(expected, rel=1e-12)


def test_shape_and_dtype_errors_name_the_shapes():
    loss = LandmarkKDLoss()
    a, b = torch.zeros(2, 136), torch.zeros(2, 68, 2)
    with pytest.raises(ValueError, match=r"\(2, 136\).*\(2, 68, 2\)"):
        loss(a, a, a, b)
    with pytest.raises(ValueError, match=r"\(2, 135\)"):
        loss(*(torch.zeros(2, 135),) * 4)
    with pytest.raises(ValueError, match=r"\(2, 68, 3\)"):
        L2LandmarkLoss()(torch.zeros(2, 68, 3), torch.zeros(2, 68, 3))
    with pytest.raises(ValueError, match="floating"):
        loss(*(torch.zeros(2, 136, dtype=torch.long),) * 4)
    with pytest.raises(ValueError, match="boundary_fraction"):
        LandmarkKDLoss(boundary_fraction=1.5)
