"""Where the student looked: Grad-CAM heat maps (pytorch-grad-cam, package ``grad-cam``) over the B-scan.

The CAM is computed on the letterboxed model input for the predicted class (or a given one), cropped back to the
B-scan's own area and resized to its size, then blended over the greyscale B-scan as a colour overlay.

Example:
    >>> import numpy as np, torch
    >>> from kdcore.models import create_model
    >>> model = create_model("test_efficientnet", 3, pretrained=False, in_chans=1).eval()
    >>> gray = np.random.default_rng(0).integers(0, 256, (60, 90), dtype=np.uint8)
    >>> cam = gradcam_maps(model, [gray], size=32)[0]
    >>> cam.shape, float(cam.min()) >= 0, float(cam.max()) <= 1
    ((60, 90), True, True)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from kdcore.atomic import atomic_write_bytes
from kdcore.errors import KDError

from .preprocess import OCT_MEAN, OCT_STD, preprocess

__all__ = ["target_layer", "gradcam_maps", "overlay", "load_torch_model", "write_overlays"]


def target_layer(model: Any) -> Any:
    """The layer Grad-CAM reads: timm's last feature stage (``feature_info``), else the last 2-D convolution."""
    import torch

    info = getattr(model, "feature_info", None)
    if info:
        last = info[-1]["module"] if isinstance(info, list) else info.module_name()[-1]
        try:
            return model.get_submodule(last)
        except AttributeError:  # timm flattens some names (``blocks_4``); fall back to the last convolution
            pass
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs:
        raise KDError(f"{type(model).__name__}: no convolution layer for Grad-CAM")
    return convs[-1]


def _letterbox_box(height: int, width: int, size: int) -> tuple[int, int, int, int]:
    """``(top, left, new_h, new_w)`` of a B-scan inside its letterboxed canvas (medkd.preprocess.letterbox)."""
    scale = size / max(height, width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    return (size - new_h) // 2, (size - new_w) // 2, new_h, new_w


def gradcam_maps(model: Any, images: Sequence[np.ndarray], size: int, classes: Sequence[int] | None = None,
                 mean: Sequence[float] = OCT_MEAN, std: Sequence[float] = OCT_STD,
                 device: str = "cpu") -> list[np.ndarray]:
    """Grad-CAM in [0, 1] at each greyscale B-scan's own size, for ``classes`` (default: the predicted class)."""
    import torch
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = model.to(device).eval()
    batch = torch.from_numpy(np.stack([preprocess(g, size, mean, std) for g in images])).to(device)
    if classes is None:
        with torch.no_grad():
            classes = model(batch).argmax(1).tolist()
    with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
        maps = cam(input_tensor=batch, targets=[ClassifierOutputTarget(int(c)) for c in classes])
    out = []
    for gray, heat in zip(images, maps):
        top, left, new_h, new_w = _letterbox_box(gray.shape[0], gray.shape[1], size)
        crop = np.ascontiguousarray(heat[top:top + new_h, left:left + new_w], dtype=np.float32)
        out.append(np.clip(cv2.resize(crop, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR), 0, 1))
    return out


def overlay(gray: np.ndarray, cam: np.ndarray, weight: float = 0.4) -> np.ndarray:
    """RGB uint8: the B-scan with the heat map (JET colours) blended at ``weight``."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32) / 255.0
    return show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True, image_weight=1.0 - weight)


def load_torch_model(export: str | os.PathLike) -> tuple[Any, dict]:
    """The eager PyTorch student of an export folder (its ``model.safetensors``) and the contract."""
    from kdcore.checkpoint import load_weights
    from kdcore.export.sidecar import read_sidecar
    from kdcore.export.runtime import resolve_export
    from kdcore.models import build_model

    try:
        weights, sidecar, _ = resolve_export(export, "torch")
    except KDError as exc:
        raise KDError(f"--saliency needs the export's PyTorch weights (model.safetensors): {exc}") from None
    contract = read_sidecar(sidecar)
    model = build_model(contract)
    model.load_state_dict(load_weights(weights))
    return model.eval(), contract


def write_overlays(model: Any, contract: dict, items: Sequence[tuple[str, np.ndarray]], out_dir: str | os.PathLike,
                   classes: Sequence[int] | None = None, batch_size: int = 8) -> list[Path]:
    """One PNG per ``(name, greyscale B-scan)`` in ``out_dir`` (``<name>_<class>.png``), written atomically."""
    spec = contract["input"]
    names = list(contract["classes"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        wanted = None if classes is None else list(classes[start:start + batch_size])
        grays = [gray for _, gray in chunk]
        if wanted is None:
            import torch

            batch = torch.from_numpy(np.stack([preprocess(g, int(spec["size"]), spec["mean"], spec["std"])
                                               for g in grays]))
            with torch.no_grad():
                wanted = model(batch).argmax(1).tolist()
        maps = gradcam_maps(model, grays, int(spec["size"]), wanted, spec["mean"], spec["std"])
        for (name, gray), cam, cls in zip(chunk, maps, wanted):
            ok, png = cv2.imencode(".png", cv2.cvtColor(overlay(gray, cam), cv2.COLOR_RGB2BGR))
            if not ok:
                raise KDError(f"cannot encode the overlay of {name}")
            target = out / f"{name}_{names[int(cls)]}.png"
            atomic_write_bytes(target, png.tobytes())
            written.append(target)
    return written
