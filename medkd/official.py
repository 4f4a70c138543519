"""OCT2017's official protocol as a one-fold manifest: the test folder, and training patients not in it."""

from __future__ import annotations

from collections import Counter

from kdcore.cv import FoldManifest, FoldSplit, inner_validation_split

from .data import OCTDataset, official_split

__all__ = ["official_manifest", "select_records"]


def official_manifest(dataset: OCTDataset, val_fraction: float, seed: int) -> FoldManifest:
    train, test, dropped = official_split(dataset, drop_overlap=True)
    fit, val_list = inner_validation_split([r.patient for r in train], [r.label for r in train], val_fraction, seed)
    val = set(val_list)
    test_patients = sorted({r.patient for r in test})
    counts = {"train": Counter(r.label for r in train if r.patient not in val),
              "val": Counter(r.label for r in train if r.patient in val),
              "test": Counter(r.label for r in test)}
    split = FoldSplit(fold=0, train=fit, val=sorted(val), test=test_patients,
                      class_counts={k: dict(sorted(v.items())) for k, v in counts.items()},
                      val_share=round(len(val) / (len(val) + len(fit)), 6))
    manifest = FoldManifest(folds=[split], seed=seed, n_folds=1, val_fraction=val_fraction,
                            n_items=len(train) + len(test), n_groups=len(set(fit) | val | set(test_patients)),
                            classes=list(dataset.classes))
    manifest.validate()
    return manifest


def select_records(dataset: OCTDataset, patients: set[str], part: str, official: bool) -> list:
    """Records of ``patients`` for a fold part; in the official protocol test images come from test/ only."""
    records = [r for r in dataset.records if r.patient in patients]
    if official:
        wanted_test = part == "test"
        records = [r for r in records if (r.official_split == "test") == wanted_test]
    return records
