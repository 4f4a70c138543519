"""Frozen teacher for online distillation: eval mode, no gradients, optional autocast.

The teacher sees the very batch the student sees (same augmentation), so its soft labels describe the
student's input, not another random view of it.

Example:
    >>> import torch, timm
    >>> teacher = FrozenTeacher(timm.create_model("test_efficientnet", num_classes=3))
    >>> teacher(torch.zeros(2, 3, 64, 64)).requires_grad
    False
    >>> tapped = FrozenTeacher(timm.create_model("test_efficientnet", num_classes=3), features=("pooled",))
    >>> logits, features = tapped.forward_with_features(torch.zeros(2, 3, 64, 64))  # one forward pass
    >>> tuple(logits.shape), tuple(features["pooled"].shape)
    ((2, 3), (2, 256))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from .checkpoint import check_meta, load_weights, read_meta
from .features import FeatureTaps

__all__ = ["FrozenTeacher"]


class FrozenTeacher(nn.Module):
    """Wraps a trained model so it can only predict.

    Args:
        model: the trained teacher.
        amp_dtype: run the forward under autocast with this dtype (``torch.bfloat16``/``torch.float16``);
            outputs are returned in float32 either way.
        features: intermediate outputs to record in the same forward pass (``"pooled"`` or module paths, see
            :class:`kdcore.features.FeatureTaps`): ``teacher(images)`` still returns the logits, and
            ``teacher.features`` holds that pass's features (or call :meth:`forward_with_features`).
    """

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None = None, features: Sequence[str] = ()):
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.amp_dtype = amp_dtype
        self.feature_paths = tuple(features)
        self._taps = FeatureTaps(self.model, self.feature_paths) if self.feature_paths else None
        self.features: dict[str, torch.Tensor] = {}

    def train(self, mode: bool = True) -> "FrozenTeacher":
        # A teacher never leaves eval mode: BatchNorm statistics and dropout stay fixed.
        self.model.eval()
        self.training = False
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device_type = images.device.type
        with torch.inference_mode(), torch.autocast(device_type, dtype=self.amp_dtype or torch.float32,
                                                    enabled=self.amp_dtype is not None):
            output = self.model(images)
        # Inference tensors cannot be saved for the student's backward pass; a clone outside inference mode can.
        if self._taps is not None:
            self.features = {path: self._taps[path].float().clone() for path in self.feature_paths}
            self._taps.clear()
        return output.float().clone()

    def forward_with_features(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and the requested features of one forward pass."""
        logits = self(images)
        return logits, dict(self.features)

    @classmethod
    def from_weights(
        cls,
        path: str | os.PathLike,
        build: Callable[[dict[str, Any]], nn.Module],
        expected: dict[str, Any],
        amp_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
        features: Sequence[str] = (),
    ) -> "FrozenTeacher":
        """Load a teacher saved by this package, refusing one from another fold, split or architecture.

        Args:
            path: the teacher's ``model.safetensors`` (with ``model.json`` beside it).
            build: makes the untrained architecture from the metadata (e.g. ``lambda m: create_model(...)``).
            expected: metadata that must match, e.g. ``{"fold": 2, "manifest": sha, "arch": "convnextv2_large"}``.
            channels_last: match a student trained in NHWC layout (a layout mismatch costs a conversion per batch).
        """
        path = Path(path)
        meta = read_meta(path)
        check_meta(path, meta, expected)
        model = build(meta)
        state = load_weights(path)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            from .errors import CheckpointError

            raise CheckpointError(f"{path}: weights do not fit architecture {meta.get('arch')!r} "
                                  f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
        model = model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        return cls(model, amp_dtype=amp_dtype, features=features)
