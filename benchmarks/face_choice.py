"""How the face choice of `facekd predict` does with an informative landmark model: the figures behind the
constants of facekd.face_choice (docs/face-choice.md).

No trained landmark model ships with the project, so this trains two small ones on the real faces of
../shared/fixtures (50 LFPW test faces and 2 of 300-W; research use only, never copied into the repository):
each on one half, judged on the other half (held out). Then, per held-out photograph, every Haar candidate gets
its face score, and the script prints how often the annotated face is chosen, how many real faces are refused,
and how many of 40 random textures with cascade detections are refused (by both models), for the shipped
weight and threshold and a small grid around them. About 20 minutes on two CPU cores.

    python benchmarks/face_choice.py [--steps 600] [--out face_choice.json]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "shared")]

from facekd import face_choice  # noqa: E402
from facekd.detect import SIZE_WEIGHT  # noqa: E402
from facekd.geometry import box_from_landmarks, crop_matrix  # noqa: E402
from facekd.pts_files import read_pts  # noqa: E402
from facekd.predictor import LandmarkDetector  # noqa: E402
from facekd.schemes import get_scheme  # noqa: E402
from kdcore.images import read_image  # noqa: E402

SIZE, MARGIN = 64, 0.25
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
CONTRACT = {"task": "landmarks", "n_points": 68, "scheme": "ibug68",
            "flip_permutation": list(get_scheme(68).flip_permutation),
            "input": {"size": SIZE, "crop_margin": MARGIN, "mean": MEAN.tolist(), "std": STD.tolist()}}


def texture(seed: int, size: int = 320) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = sum(cv2.GaussianBlur(rng.normal(size=(size, size)), (0, 0), s) * s for s in (2, 6, 18))
    grey = ((image - image.min()) / np.ptp(image) * 255).astype(np.uint8)
    return np.dstack([grey] * 3)


def sample(image, points, rng, permutation):
    """One augmented training crop (rotation, scale, shift, mirror, brightness) and its points / SIZE."""
    matrix = np.vstack([crop_matrix(box_from_landmarks(points), SIZE, MARGIN), [0, 0, 1]])
    centre = ((SIZE - 1) / 2, (SIZE - 1) / 2)
    jitter = cv2.getRotationMatrix2D(centre, rng.uniform(-20, 20), rng.uniform(0.85, 1.15))
    jitter[:, 2] += rng.uniform(-0.08, 0.08, 2) * SIZE
    affine = (np.vstack([jitter, [0, 0, 1]]) @ matrix)[:2]
    crop = cv2.warpAffine(image, affine, (SIZE, SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    target = points @ affine[:, :2].T + affine[:, 2]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
        target = target.copy()
        target[:, 0] = SIZE - 1 - target[:, 0]
        target = target[permutation]
    crop = np.clip(crop.astype(np.float64) * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25), 0, 255)
    return ((crop / 255 - MEAN) / STD).transpose(2, 0, 1).astype(np.float32), (target / SIZE).reshape(-1)


def train(faces, seed: int, steps: int, target: Path) -> Path:
    import timm
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    permutation = np.array(get_scheme(68).flip_permutation)
    model = timm.create_model("resnet18", num_classes=136, pretrained=False)
    optimiser = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, 2e-3, total_steps=steps)
    for step in range(steps):
        batch = [sample(*faces[rng.integers(len(faces))], rng, permutation) for _ in range(32)]
        x = torch.from_numpy(np.stack([b[0] for b in batch]))
        y = torch.from_numpy(np.stack([b[1] for b in batch]).astype(np.float32))
        loss = torch.nn.functional.smooth_l1_loss(model(x), y, beta=0.01)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % 100 == 0:
            print(f"  model {seed}: step {step}, loss {float(loss):.4f}", flush=True)
    model.eval()
    torch.onnx.export(model, torch.zeros(1, 3, SIZE, SIZE), str(target), input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": {0: "n"}, "output": {0: "n"}}, dynamo=False)
    return target


def detector(onnx: Path) -> LandmarkDetector:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    return LandmarkDetector(lambda x: session.run(None, {"input": x.astype(np.float32)})[0], CONTRACT)


def iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def evaluate(rows, textures, weight: float, threshold: float) -> dict:
    """Counts for one plausibility weight and refusal threshold, from the recorded candidates."""
    by_image, by_texture = defaultdict(list), defaultdict(list)
    for r in rows:
        by_image[r["image"]].append(r)
    for r in textures:
        by_texture[r["image"]].append(r)
    chosen = refused = 0
    misses = []
    for image, found in by_image.items():
        largest = max(r["side"] for r in found)
        scored = [(math.log(r["neighbors"]) + weight * r["plausibility"], r) for r in found]
        accepted = [(s + SIZE_WEIGHT * math.log(r["side"] / largest), r) for s, r in scored if s >= threshold]
        if not accepted:
            refused += 1
            misses.append(f"{image} (refused)")
            continue
        best = max(accepted, key=lambda t: t[0])[1]
        chosen += best["face"]
        if not best["face"]:
            misses.append(image)
    clutter = sum(all(math.log(r["neighbors"]) + weight * r["plausibility"] < threshold for r in found)
                  for found in by_texture.values())
    return {"weight": weight, "threshold": threshold, "photos": len(by_image), "chosen": chosen,
            "real_refused": refused, "textures": len(by_texture), "textures_refused": clutter, "misses": misses}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fixtures", type=Path, default=REPO.parent / "shared" / "fixtures")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--textures", type=int, default=40)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    photos = sorted([*(args.fixtures / "faces-lfpw").glob("*.png"), *(args.fixtures / "faces-300w").glob("*.jpg")])
    if len(photos) < 50:
        print(f"{args.fixtures}: the real faces are not there; nothing to measure")
        return 1
    faces = [(read_image(p, "rgb"), read_pts(p.with_suffix(".pts"))) for p in photos]
    rows, textures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for half in (0, 1):
            train_faces = [f for i, f in enumerate(faces) if i % 2 != half]
            model = detector(train(train_faces, half, args.steps, Path(tmp) / f"half{half}.onnx"))
            print(f"model {half}: informative {face_choice.model_is_informative(model)}", flush=True)
            for i, path in enumerate(photos):
                if i % 2 != half:
                    continue
                image, points = faces[i]
                truth = box_from_landmarks(points)
                for f in face_choice.assess_faces(model, image):
                    rows.append({"image": path.name, "face": iou(f.box, truth) > 0.3, **f.to_dict(),
                                 "side": f.candidate.box[2] - f.candidate.box[0]})
            for seed in range(args.textures):  # a texture counts as refused when both models refuse it
                for f in face_choice.assess_faces(model, texture(seed)):
                    textures.append({"image": f"texture{seed}", **f.to_dict()})
    results = [evaluate(rows, textures, w, t) for w in (0.0, 0.5, 1.0, 1.5, 2.0) for t in (1.2, 1.4, 1.6, 1.8, 2.0)]
    shipped = evaluate(rows, textures, face_choice.PLAUSIBILITY_WEIGHT, face_choice.REFUSE_BELOW)
    for r in results:
        print(f"weight {r['weight']}, refuse below {r['threshold']}: annotated face chosen in {r['chosen']} of "
              f"{r['photos']}, real faces refused {r['real_refused']}, textures refused {r['textures_refused']} of "
              f"{r['textures']}; misses {r['misses']}")
    print(f"shipped (weight {shipped['weight']}, refuse below {shipped['threshold']}): chosen {shipped['chosen']} "
          f"of {shipped['photos']}, real refused {shipped['real_refused']}, textures refused "
          f"{shipped['textures_refused']} of {shipped['textures']}")
    if args.out:
        args.out.write_text(json.dumps({"shipped": shipped, "grid": results, "candidates": rows,
                                        "texture_candidates": textures}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
