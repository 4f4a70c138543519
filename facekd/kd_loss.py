"""KD-Loss of Fard & Mahoor (CVIU 2022): a student regressor guided by a Tough and a Tolerant teacher.

The Tough teacher is trained with L2 on the ground truth (Hard-landmarks), the Tolerant teacher with L2 on
ASM-softened ground truth (Soft-landmarks, :class:`facekd.asm.ActiveShapeModel`). Every term works per
coordinate (x and y separately) and is averaged over batch and coordinates, as in the published code
(aliprf/KD-Loss, ``custom_Losses.kd_loss``). For one coordinate write ``g`` ground truth, ``p`` student,
``e = |p - g|``, ``s = sign(p - g)``, and for a teacher ``t``: ``d_t = |t - g|``, its prediction mirrored onto
the student's side of the ground truth ``m_t = g + s d_t`` and the boundary ``b_t = g + s f d_t``.

Main loss (``d = d_tol``; continuous at ``e = d`` since both sides equal ``c d`` there)::

    main = c e                     if e <= d      (inside the Tolerant teacher's error region)
           e^2 + c d - d^2         if e >  d

Assistive loss for each teacher (weights are non-differentiable region maps)::

    ALoss_t = w_t |m_t - p|,  w_t = a_pos            if e > d_t > 0          (student beyond the teacher: pull)
                                    a_neg            if f d_t <= e <= d_t    (between boundary and teacher: push
                                                                               away from it, i.e. towards g)
                                    a_neg e/(f d_t)  if e < f d_t and ramp   (ramp from 0 at g to a_neg at b_t)
                                    0                otherwise

    KD-Loss = w_main mean(main) + w_tough mean(ALoss_tough) + w_tol mean(ALoss_tol)

Constants, published code vs paper:

==================  ===========================  ==================================
constant            published code (default)     our reading of the paper's figures (``PAPER_CONSTANTS``)
==================  ===========================  ==================================
c (main slope)      3                            3
f (boundary)        0.15                         0.4
a_pos tough / tol   1.9 / 1.8                    1 / 1
a_neg tough / tol   -0.45 / -0.4                 -0.5 / -0.5
ramp                no (weight 0 near g)         yes
w_main/tough/tol    2 / 1 / 1 (``main.py``)      2 / 1 / 1 (kept from the code)
==================  ===========================  ==================================

The code column was read from ``custom_Losses.py``, ``student_train.py`` and ``main.py``. The other column is
a READING of the paper's figures (loss-weight plots), not constants the paper states or any code uses: the paper
text was not available offline, and the values, like the ramp's exact form (linear in ``e``, continuous at
``b_t``), are our reading. Only the code's constants are the authors' own.

With both teachers exactly at the ground truth every assistive term is 0 and the main loss is ``w_main``
times the mean squared coordinate error. The code's coordinates are crop coordinates normalised by the input
size (``(112 - x) / 224``); the loss depends on the scale (``c e`` vs ``e^2``), so use the same frame.

Example:
    >>> import torch
    >>> g = torch.zeros(2, 68, 2)
    >>> loss = LandmarkKDLoss()(g + 0.1, g + 0.05, g + 0.08, g)
    >>> loss.shape
    torch.Size([])
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = ["LandmarkKDLoss", "L2LandmarkLoss", "KDLossComponents", "CODE_CONSTANTS", "PAPER_CONSTANTS"]

CODE_CONSTANTS: dict[str, float | bool] = dict(
    main_slope=3.0, boundary_fraction=0.15, tough_pos_weight=1.9, tough_neg_weight=-0.45,
    tol_pos_weight=1.8, tol_neg_weight=-0.4, ramp=False, main_weight=2.0, tough_weight=1.0, tol_weight=1.0)
# Our reading of the paper's figures (see the module docstring), not published constants.
PAPER_CONSTANTS: dict[str, float | bool] = dict(
    CODE_CONSTANTS, boundary_fraction=0.4, tough_pos_weight=1.0, tough_neg_weight=-0.5,
    tol_pos_weight=1.0, tol_neg_weight=-0.5, ramp=True)


class KDLossComponents(NamedTuple):
    """The weighted terms (``total = main + tough + tolerant``), scalar tensors attached to the graph."""

    total: torch.Tensor
    main: torch.Tensor
    tough: torch.Tensor
    tolerant: torch.Tensor


def _check_landmarks(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    first = next(iter(shapes.values()))
    if len(set(shapes.values())) != 1:
        raise ValueError(f"landmark tensors must share one shape, got {shapes}")
    if len(first) not in (2, 3) or (len(first) == 2 and first[1] % 2) or (len(first) == 3 and first[2] != 2):
        raise ValueError(f"landmarks must be (B, K*2) or (B, K, 2), got {shapes}")
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")


class L2LandmarkLoss(nn.Module):
    """Baseline and teachers' loss: mean squared error over all coordinates (x and y separately) and the batch.

    This is the mean over points (not the sum) of half the squared point distance. The published code uses
    Keras' per-sample MSE summed by the gradient tape over the batch, i.e. this value times the batch size.
    """

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _check_landmarks(pred=pred, target=target)
        return torch.mean((pred - target.detach()) ** 2)


class LandmarkKDLoss(nn.Module):
    """KD-Loss; call ``(student, tough, tolerant, target) -> scalar``. Formula and constants: module docstring.

    Inputs are (B, K*2) or (B, K, 2) tensors in one normalised coordinate frame; the teachers' outputs and the
    target are detached here. ``components(...)`` returns the three weighted terms for logging.
    """

    # The published code's constants, written once (CODE_CONSTANTS); the recipe's student.kd defaults are these.
    def __init__(self, main_slope: float = CODE_CONSTANTS["main_slope"],
                 boundary_fraction: float = CODE_CONSTANTS["boundary_fraction"],
                 tough_pos_weight: float = CODE_CONSTANTS["tough_pos_weight"],
                 tough_neg_weight: float = CODE_CONSTANTS["tough_neg_weight"],
                 tol_pos_weight: float = CODE_CONSTANTS["tol_pos_weight"],
                 tol_neg_weight: float = CODE_CONSTANTS["tol_neg_weight"], ramp: bool = CODE_CONSTANTS["ramp"],
                 main_weight: float = CODE_CONSTANTS["main_weight"],
                 tough_weight: float = CODE_CONSTANTS["tough_weight"],
                 tol_weight: float = CODE_CONSTANTS["tol_weight"]) -> None:
        super().__init__()
        if not 0.0 <= boundary_fraction <= 1.0:
            raise ValueError(f"boundary_fraction must be in [0, 1], got {boundary_fraction}")
        if main_slope < 0:
            raise ValueError(f"main_slope must be >= 0, got {main_slope}")
        self.main_slope = float(main_slope)
        self.boundary_fraction = float(boundary_fraction)
        self.tough_pos_weight, self.tough_neg_weight = float(tough_pos_weight), float(tough_neg_weight)
        self.tol_pos_weight, self.tol_neg_weight = float(tol_pos_weight), float(tol_neg_weight)
        self.ramp = bool(ramp)
        self.main_weight = float(main_weight)
        self.tough_weight, self.tol_weight = float(tough_weight), float(tol_weight)

    @classmethod
    def paper(cls, **overrides: float | bool) -> "LandmarkKDLoss":
        """Our reading of the paper's figures (``PAPER_CONSTANTS``), optionally overridden."""
        return cls(**{**PAPER_CONSTANTS, **overrides})

    def extra_repr(self) -> str:
        names = CODE_CONSTANTS.keys()
        return ", ".join(f"{name}={getattr(self, name)}" for name in names)

    def _assist(self, student, teacher, target, error, side, pos_weight, neg_weight):
        teacher_error = (teacher - target).abs()
        mirrored = target + side * teacher_error
        boundary = self.boundary_fraction * teacher_error
        with torch.no_grad():
            weight = torch.zeros_like(error)
            weight = torch.where((error > teacher_error) & (teacher_error > 0), pos_weight, weight)
            weight = torch.where((error >= boundary) & (error <= teacher_error), neg_weight, weight)
            if self.ramp:
                ramp = neg_weight * error / boundary.clamp_min(torch.finfo(error.dtype).tiny)
                weight = torch.where(error < boundary, ramp, weight)
        return torch.mean(weight * (mirrored - student).abs())

    def components(self, student: torch.Tensor, tough: torch.Tensor, tolerant: torch.Tensor,
                   target: torch.Tensor) -> KDLossComponents:
        _check_landmarks(student=student, tough=tough, tolerant=tolerant, target=target)
        tough, tolerant, target = tough.detach(), tolerant.detach(), target.detach()
        diff = student - target
        error = diff.abs()
        side = torch.sign(diff).detach()
        region = (tolerant - target).abs()
        main = torch.where(error <= region, self.main_slope * error,
                           diff ** 2 + self.main_slope * region - region ** 2)
        main = self.main_weight * main.mean()
        loss_tough = self.tough_weight * self._assist(student, tough, target, error.detach(), side,
                                                      self.tough_pos_weight, self.tough_neg_weight)
        loss_tol = self.tol_weight * self._assist(student, tolerant, target, error.detach(), side,
                                                  self.tol_pos_weight, self.tol_neg_weight)
        return KDLossComponents(main + loss_tough + loss_tol, main, loss_tough, loss_tol)

    def forward(self, student: torch.Tensor, tough: torch.Tensor, tolerant: torch.Tensor,
                target: torch.Tensor) -> torch.Tensor:
        return self.components(student, tough, tolerant, target).total
