"""Online distillation: both networks of the pair learn on the same batches, and the pair splits into two."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from kdcore.checkpoint import load_weights
from kdcore.config import TrainConfig
from kdcore.engine import Trainer
from kdcore.losses import BDKDLoss, CrossEntropyLoss, DMLLoss, build_loss
from kdcore.objective import DistillationSection, StudentObjective
from kdcore.online import OnlineObjective, OnlinePair, OnlineTask, build_online_objective, unwrap_pair
from tests.kdcore.toy import ToyImages, toy_loader


class Net(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(3, width, 3), torch.nn.BatchNorm2d(width),
                                            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        self.classifier = torch.nn.Linear(width, 2)

    def get_classifier(self):
        return self.classifier

    def forward(self, x):
        return self.classifier(self.features(x))


def toy_validate(dataset):
    def validate(model):
        batches = list(DataLoader(dataset, batch_size=8))
        logits = torch.cat([model(b["image"]) for b in batches])
        target = torch.cat([b["target"] for b in batches])
        accuracy = float((logits.argmax(1) == target).float().mean())
        return {"loss": float(F.cross_entropy(logits, target)), "accuracy": accuracy}
    return validate


class Student(DistillationSection):
    pass


@pytest.mark.parametrize("kd_loss", ["dml", "bdkd"])
def test_online_run_trains_both_networks_and_splits(tmp_path, kd_loss, one_thread):
    torch.manual_seed(0)
    teacher, student = Net(8), Net(3)
    pair = OnlinePair(teacher, student)
    before = {k: v.clone() for k, v in pair.state_dict().items()}
    objective = build_online_objective(Student(kd_loss=kd_loss), CrossEntropyLoss())
    task = OnlineTask(objective, toy_validate(ToyImages(16, seed=3)))
    trainer = Trainer(pair, TrainConfig(epochs=4, lr=3e-2, warmup_epochs=0), task, monitor="loss", mode="min",
                      device=torch.device("cpu"), name="online", fold=0, output_dir=tmp_path)
    result = trainer.fit(toy_loader(ToyImages(32, seed=1), batch_size=8))
    train = [h for h in result.history if h["split"] == "train"]
    assert train[-1]["teacher_loss"] < train[0]["teacher_loss"]
    assert train[-1]["student_loss"] < train[0]["student_loss"]
    assert {"val_loss", "val_accuracy", "val_teacher_loss", "val_teacher_accuracy"} <= set(train[-1])
    trained_teacher, trained_student = unwrap_pair(result.model).split_pair()
    assert trained_teacher is teacher and trained_student is student
    for prefix, net in (("teacher.", trained_teacher), ("student.", trained_student)):
        changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[prefix + k])]
        assert changed, prefix  # both networks learnt
    saved = load_weights(tmp_path / "model.safetensors")
    assert {k.split(".")[0] for k in saved} == {"teacher", "student"}  # the engine saves the pair: split to export


def test_pair_forward_follows_mode_and_heads_are_both_classifiers():
    pair = OnlinePair(Net(4), Net(2))
    images = torch.randn(2, 3, 8, 8)
    assert isinstance(pair.train()(images), tuple)
    assert pair.eval()(images).shape == (2, 2)
    head_ids = {id(p) for p in pair.get_classifier().parameters()}
    assert head_ids == {id(p) for p in [*pair.teacher.classifier.parameters(), *pair.student.classifier.parameters()]}


@pytest.mark.parametrize("distill", [DMLLoss(), BDKDLoss(temperature=2.0)])
def test_each_network_learns_only_from_its_own_part(distill):
    torch.manual_seed(1)
    t = torch.randn(6, 3, requires_grad=True)
    s = torch.randn(6, 3, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    objective = OnlineObjective(StudentObjective(distill), CrossEntropyLoss())
    _, parts = objective(t, s, y)
    total, _ = objective(t, s, y)
    grad_t, grad_s = torch.autograd.grad(total, [t, s])
    # independent: teacher = CE(t) + peer term with s fixed; student = CE(s) + distill(s, t fixed)
    t2, s2 = t.detach().clone().requires_grad_(), s.detach().clone().requires_grad_()
    peer = distill.teacher_term(t2, s.detach(), y) if hasattr(distill, "teacher_term") else distill(t2, s.detach(), y)
    (ref_t,) = torch.autograd.grad(F.cross_entropy(t2, y) + peer, t2)
    (ref_s,) = torch.autograd.grad(F.cross_entropy(s2, y) + distill(s2, t.detach(), y), s2)
    torch.testing.assert_close(grad_t, ref_t)
    torch.testing.assert_close(grad_s, ref_s)
    assert float(parts["teacher_loss"] + parts["student_loss"]) == pytest.approx(float(total.detach()))


def test_online_objective_refuses_offline_losses():
    with pytest.raises(TypeError, match="online distillation needs one of bdkd, dml"):
        OnlineObjective(StudentObjective(build_loss("kd")), CrossEntropyLoss())
