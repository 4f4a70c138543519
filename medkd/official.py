"""OCT2017's official protocol as a one-fold manifest: the test folder, and training patients not in it."""

from __future__ import annotations

from collections import Counter

from kdcore.cv import FoldManifest, FoldSplit, make_fold_manifest

from .data import OCTDataset, official_split

__all__ = ["official_manifest", "select_records"]


def official_manifest(dataset: OCTDataset, val_fraction: float, seed: int) -> FoldManifest:
    train, test, dropped = official_split(dataset, drop_overlap=True)
    # The inner validation split over training patients reuses the patient-level splitter (fold 0 of it).
    inner = make_fold_manifest([r.patient for r in train], [r.label for r in train],
                               n_folds=max(2, int(round(1 / val_fraction))), val_fraction=0.5, seed=seed)
    val = set(inner.folds[0].test)
    fit = sorted({r.patient for r in train} - val)
    test_patients = sorted({r.patient for r in test})
    counts = {"train": Counter(r.label for r in train if r.patient not in val),
              "val": Counter(r.label for r in train if r.patient in val),
              "test": Counter(r.label for r in test)}
    split = FoldSplit(fold=0, train=fit, val=sorted(val), test=test_patients,
                      class_counts={k: dict(sorted(v.items())) for k, v in counts.items()})
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
