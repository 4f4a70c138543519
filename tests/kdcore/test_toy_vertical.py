"""A third vertical, written here in a few dozen lines, runs split, run, report and export through kdcore's machinery.

The toy task: 1x32x32 images of three kinds of stripes (horizontal, vertical, diagonal) under noise, 18 subjects
of 4 images; a teacher and a student distilled from it (kdcore's student objective), 3 subject-level folds.
Everything the toy declares is in this module; everything it does not (running roles on folds in dependency order,
resuming, the run folder, coverage, export with parity checks, the CLI) is kdcore's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from kdcore.cli import Command, VerticalCLI, run_main, vertical_parser
from kdcore.config import CVConfig, RuntimeConfig, Section, TrainConfig
from kdcore.cv import make_fold_manifest
from kdcore.export.run_export import Exporter, export_run
from kdcore.export.run_models import report_means, run_source
from kdcore.models import ModelMeta
from kdcore.objective import DistillationSection, build_student_objective
from kdcore.report import HtmlDocument, bootstrap_samples, summarize_samples
from kdcore.report.template import PooledPredictions, ReportTemplate, build_run_report
from kdcore.vertical import FoldSets, Role, Vertical

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ("horizontal", "vertical", "diagonal")
SIZE = 32


# ------------------------------------------------------------------ the recipe
class ToyModel(Section):
    model: str = "test_efficientnet"
    weights: str | None = None
    pretrained: bool = False
    drop_path: float | None = None
    dropout: float | None = None
    train: TrainConfig = TrainConfig(epochs=3, batch_size=8, lr=3e-3)


class ToyStudent(DistillationSection, ToyModel):
    teacher_cache: Literal["off"] = "off"


class ToyData(Section):
    subjects: int = 18
    per_subject: int = 4
    root: str | None = None


class ToyReport(Section):
    bootstrap: int = 20
    latency_runs: int = 2


class ToyRecipe(Section):
    name: str = "toy"
    seed: int = 0
    data: ToyData = ToyData()
    cv: CVConfig = CVConfig(folds=3, val_fraction=0.2)
    teacher: ToyModel = ToyModel()
    student: ToyStudent = ToyStudent()
    report: ToyReport = ToyReport()
    runtime: RuntimeConfig = RuntimeConfig(device="cpu", progress=False)


# ------------------------------------------------------------------ the data
@dataclass
class Item:
    id: str
    subject: str
    label: int


def toy_image(item: Item) -> np.ndarray:
    rng = np.random.default_rng(int(item.id.split("-")[-1]))
    y, x = np.mgrid[:SIZE, :SIZE]
    stripes = [np.sin(y / 2.0), np.sin(x / 2.0), np.sin((x + y) / 2.0)][item.label]
    return (stripes + rng.normal(0, 0.8, (SIZE, SIZE))).astype(np.float32)[None]


class ToySet(torch.utils.data.Dataset):
    def __init__(self, items: list[Item]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index = key[0] if isinstance(key, tuple) else key
        item = self.items[index]
        return {"image": torch.from_numpy(toy_image(item)), "target": item.label, "index": index}


class ToyTask:
    def __init__(self, loss: torch.nn.Module, val_loader: Any, teacher: Any = None):
        self.loss_fn, self.val_loader, self.teacher = loss, val_loader, teacher

    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = model(batch["image"])
        if self.teacher is None:
            return self.loss_fn(logits, batch["target"]), {}
        return self.loss_fn(logits, self.teacher(batch["image"]), batch["target"]), {}

    @torch.no_grad()
    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        right = total = 0
        losses = []
        for batch in self.val_loader:
            logits = model(batch["image"])
            losses.append(float(F.cross_entropy(logits, batch["target"])))
            right += int((logits.argmax(1) == batch["target"]).sum())
            total += len(batch["target"])
        return {"loss": float(np.mean(losses)), "accuracy": right / total}

    def inputs(self, batch: dict) -> torch.Tensor:
        return batch["image"]


# ------------------------------------------------------------------ the vertical
class Toy(Vertical):
    name, group_name, counts_key = "toykd", "subject", "images"

    def roles(self, recipe: ToyRecipe) -> list[Role]:
        return [Role("teacher", "teacher"), Role("student", "student", ("teacher",), kind="student")]

    def prepare_data(self, recipe: ToyRecipe, run: Any) -> list[Item]:
        return [Item(f"s{s}-{s * 100 + k}", f"s{s}", (s + k) % 3) for s in range(recipe.data.subjects)
                for k in range(recipe.data.per_subject)]

    def build_manifest(self, recipe: ToyRecipe, data: list[Item]):
        return make_fold_manifest([i.subject for i in data], None, recipe.cv.folds, recipe.cv.val_fraction,
                                  recipe.seed, group_name="subject")

    def write_dataset_index(self, run: Any, data: list[Item]) -> None:
        run.write_json("dataset.json", {"items": [vars(i) for i in data]})

    def fold_sets(self, recipe: ToyRecipe, role: Role, data: list[Item], ctx: Any) -> FoldSets:
        parts = {p: [i for i in data if i.subject in set(getattr(ctx.split, p))] for p in ("train", "val", "test")}
        return FoldSets(ToySet(parts["train"]), ToySet(parts["val"]), ToySet(parts[ctx.evaluate]),
                        {p: len(v) for p, v in parts.items()})

    def model_meta(self, recipe: ToyRecipe, role: Role, data: Any, fold: int, manifest_sha: str) -> ModelMeta:
        return ModelMeta(self.role_config(recipe, role).model, num_outputs=3, in_chans=1, task="classification",
                         role=role.name, fold=fold, manifest=manifest_sha, recipe=recipe.name,
                         extra={"classes": list(CLASSES)}, input={"size": SIZE, "channels": 1, "mean": [0.0],
                                                                  "std": [1.0]})

    def input_shape(self, recipe: ToyRecipe, data: Any) -> tuple[int, ...]:
        return (1, SIZE, SIZE)

    def monitor(self, recipe: ToyRecipe, role: Role) -> tuple[str, Literal["min", "max"]]:
        return "accuracy", "max"

    def task(self, recipe: ToyRecipe, role: Role, sets: FoldSets, val_loader: Any, device: Any,
             teachers: dict) -> ToyTask:
        if teachers:
            return ToyTask(build_student_objective(recipe.student), val_loader, teachers["teacher"])
        return ToyTask(torch.nn.CrossEntropyLoss(), val_loader)

    @torch.no_grad()
    def predict(self, recipe: ToyRecipe, role: Role, model: torch.nn.Module, sets: FoldSets, loader: Any, ctx: Any,
                device: Any, amp_dtype: Any) -> tuple[list[dict], list[str]]:
        model.eval()
        rows = []
        for batch in loader:
            for index, logits in zip(batch["index"].tolist(), model(batch["image"])):
                item = sets.test.items[index]
                rows.append({"id": item.id, "subject": item.subject, "fold": ctx.fold, "target": item.label,
                             "pred": int(logits.argmax())})
        return rows, ["id", "subject", "fold", "target", "pred"]

    def build_report(self, run_dir: str | Path, n_boot: int | None = None, seed: int = 0) -> dict:
        return build_run_report(ToyReportTemplate(), run_dir, n_boot, seed)


@dataclass
class ToyPredictions(PooledPredictions):
    subjects: np.ndarray
    correct: np.ndarray


class ToyReportTemplate(ReportTemplate):
    model_order, unit, item, compared = ("teacher", "student"), "subject", "image", ("teacher",)

    def load(self, run: Any, name: str, context: dict) -> ToyPredictions:
        rows = [(fold, r) for fold in run.models[name] for r in run.predictions(name, fold, ["id", "pred"])]
        rows.sort(key=lambda fr: fr[1]["id"])
        return ToyPredictions(name=name, folds=list(run.models[name]), ids=np.array([r["id"] for _, r in rows]),
                              fold_of=np.array([f for f, _ in rows]), subjects=np.array([r["subject"] for _, r in rows]),
                              correct=np.array([r["pred"] == r["target"] for _, r in rows], dtype=float))

    def model_section(self, data: ToyPredictions, context: dict, missing: list[int], n_boot: int,
                      seed: int) -> tuple[dict, list[dict]]:
        estimate, samples = bootstrap_samples(lambda idx: {"accuracy": float(data.correct[idx].mean())},
                                              len(data.ids), data.subjects, n_boot, seed)
        intervals, _ = summarize_samples(samples, ["accuracy"])
        return {"accuracy": estimate["accuracy"], "ci95": intervals["accuracy"], "folds_missing": missing}, samples

    def comparison(self, a: ToyPredictions, b: ToyPredictions, sub_a: ToyPredictions, sub_b: ToyPredictions,
                   context: dict, samples: dict, n_boot: int, seed: int) -> dict:
        return {"a": a.name, "b": b.name, "available": True,
                "difference": float(sub_a.correct.mean() - sub_b.correct.mean())}

    def render(self, run: Any, report: dict, data: dict, context: dict) -> tuple[str, dict]:
        doc = HtmlDocument("toy report")
        doc.table(["model", "accuracy"], [[n, m["accuracy"]] for n, m in report["models"].items()])
        return doc.render(), {}


class ToyExporter(Exporter):
    formats = ("onnx", "torchscript")

    def contract(self, entry: Any) -> dict:
        return {"format": "kdvision-export", "format_version": 1, "task": "classification",
                "arch": entry.meta["arch"], "num_outputs": 3, "input": dict(entry.meta["input"]),
                "classes": list(CLASSES), "source": run_source(entry),
                "metrics": report_means(entry.run_dir, entry.name)}

    def parity_inputs(self, entry: Any, contract: dict, n: int = 8, part: str = "test"):
        items = [Item(**i) for i in json.loads((entry.run_dir / "dataset.json").read_text())["items"]]
        wanted = set(json.loads((entry.run_dir / "folds.json").read_text())["folds"][entry.fold][part])
        chosen = [i for i in items if i.subject in wanted][:n]
        return np.stack([toy_image(i) for i in chosen]), [], "real", f"{len(chosen)} toy images of the fold's {part}"

    def card(self, entry: Any, contract: dict, result: dict) -> str:
        return f"# Toy {entry.name}, fold {entry.fold}\n"


TOY = Toy()
TOY_EXPORTER = ToyExporter()


def toy_export_run(run_dir: Any, **options: Any) -> dict:
    return export_run(TOY_EXPORTER, run_dir, **options)


def toy_split(recipe: ToyRecipe):
    return TOY.build_manifest(recipe, TOY.prepare_data(recipe, None))


CLI = VerticalCLI(
    tool="toykd", description="toy vertical", group_name="subject", vertical=f"{__name__}:TOY",
    schema=f"{__name__}:ToyRecipe", run_help="train the toy roles", run_example="toykd run toy.yaml",
    split=toy_split, audit_formats=["toy"], audit=Command("no audit", lambda args: 0),
    synth=Command("no synth", lambda args: 0), predict=Command("no predict", lambda args: 0),
    predict_backends=["onnx"], export=f"{__name__}:toy_export_run", export_formats="onnx,torchscript",
    export_help="export a toy model")


def toy_main(argv: list[str]) -> int:
    return run_main(lambda: vertical_parser(CLI), argv)


# ------------------------------------------------------------------ the test
def test_toy_vertical_runs_split_run_report_and_export_through_kdcore(tmp_path, capsys):
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({"name": "toy", "seed": 3}))
    run = tmp_path / "run"

    assert toy_main(["split", str(recipe), "--data-root", str(tmp_path), "--out", str(tmp_path / "folds.json")]) == 0
    manifest = json.loads((tmp_path / "folds.json").read_text())
    assert len(manifest["folds"]) == 3

    # Two fold jobs into one run folder: the first report is partial, and says so as data.
    assert toy_main(["run", str(recipe), "--out", str(run), "--folds", "0"]) == 0
    assert not (run / "report.json").exists()  # the pipeline reports only once every fold is finished
    assert toy_main(["report", str(run)]) == 0
    partial = json.loads((run / "report.json").read_text())
    assert partial["coverage"]["student"]["missing"] == [1, 2]
    assert "partial report" in capsys.readouterr().err

    assert toy_main(["run", str(recipe), "--out", str(run), "--folds", "1-2", "--resume"]) == 0
    report = json.loads((run / "report.json").read_text())
    assert report["coverage"]["student"]["missing"] == [] and report["coverage"]["teacher"]["done"] == [0, 1, 2]
    # the same folds.json as `split` made, and every subject tested exactly once
    assert json.loads((run / "folds.json").read_text())["sha"] == manifest["sha"]
    tested = [json.loads((run / "folds" / f"fold_{k}" / "student" / "done.json").read_text())["images"]["test"]
              for k in range(3)]
    assert sum(tested) == 18 * 4
    for name in ("teacher", "student"):
        assert 0.0 <= report["models"][name]["accuracy"] <= 1.0
    # the student distilled from its own fold's teacher
    meta = json.loads((run / "folds" / "fold_1" / "student" / "model.json").read_text())
    assert (meta["role"], meta["fold"], meta["manifest"]) == ("student", 1, manifest["sha"])
    assert (run / "model_profile.json").is_file()

    assert toy_main(["export", str(run), "--fold", "2", "--format", "onnx", "--out", str(tmp_path / "export")]) == 0
    sidecar = json.loads((tmp_path / "export" / "model.json").read_text())
    assert sidecar["source"]["fold"] == 2 and (tmp_path / "export" / "model.onnx").is_file()
    parity = json.loads((tmp_path / "export" / "parity.json").read_text())
    assert parity["checks"] and all(check["passed"] for check in parity["checks"])
