"""The pieces of issue 13 together in the engine: an offline ND run and a teacher-free USKD run on toy data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdcore.checkpoint import load_weights
from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.losses import class_mean_embeddings
from kdcore.objective import DistillationSection, build_student_objective, needs_teacher
from kdcore.teacher import FrozenTeacher
from tests.kdcore.test_online import Net
from tests.kdcore.toy import ToyImages, toy_loader


class Student(DistillationSection):
    pass


class ObjectiveTask:
    """What a vertical's task does with the objective: tap the student, ask the teacher for its features."""

    def __init__(self, objective, student, teacher):
        self.objective, self.teacher = objective, teacher
        self.taps = objective.tap(student)
        self.auxiliary = objective if objective.has_parameters else None

    def loss(self, model, batch):
        logits = model(batch["image"])
        teacher_logits = self.teacher(batch["image"]) if self.teacher is not None else None
        kwargs = self.objective.feature_kwargs(self.taps, self.teacher)
        return self.objective(logits, teacher_logits, batch["target"], **kwargs), {}

    def validate(self, model):
        batch = next(iter(DataLoader(ToyImages(8, seed=2), batch_size=8)))
        return {"loss": float(F.cross_entropy(model(batch["image"]), batch["target"]))}

    def inputs(self, batch):
        return batch["image"]


def run(tmp_path, section, teacher_net=None):
    torch.manual_seed(0)
    student = Net(3)
    objective = build_student_objective(section)
    teacher = None
    if needs_teacher(section):
        teacher = FrozenTeacher(teacher_net, features=(objective.teacher_feature_path,))
    objective.bind_models(student, teacher, torch.zeros(2, 3, 24, 24))
    train = ToyImages(16, seed=1)
    if section.feature_loss == "nd":  # the fold's training images only
        objective.set_class_means(class_mean_embeddings(teacher, DataLoader(train, batch_size=8), n_classes=2))
    before = {k: v.clone() for k, v in student.state_dict().items()}
    task = ObjectiveTask(objective, student, teacher)
    trainer = Trainer(student, TrainConfig(epochs=2, lr=3e-2, warmup_epochs=0), task, monitor="loss", mode="min",
                      device=torch.device("cpu"), name="s", fold=0, output_dir=tmp_path)
    result = trainer.fit(toy_loader(train, batch_size=8))
    saved = load_weights(tmp_path / "model.safetensors")
    assert set(saved) == set(before)  # no projector, weak classifier or class means in the student's weights
    assert any(not torch.equal(v, before[k]) for k, v in result.model.state_dict().items())
    return result, objective


def test_offline_nd_run(tmp_path, one_thread):
    torch.manual_seed(5)
    result, objective = run(tmp_path, Student(feature_loss="nd"), teacher_net=Net(6).eval())
    assert objective.feature_loss.class_means.shape == (2, 6)
    assert isinstance(objective.feature_loss.projector.layer, torch.nn.Linear)  # student 3 -> teacher 6
    assert all(h["loss"] == h["loss"] for h in result.history)


def test_teacher_free_uskd_run(tmp_path, one_thread):
    result, objective = run(tmp_path, Student(kd_loss="uskd", feature_path="pooled"))  # Net has no stages
    assert objective.distill.fc.in_features == 3 and not objective.uses_teacher
