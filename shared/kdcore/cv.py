"""Patient- (or subject-) level cross-validation and the fold manifest every model of a run shares.

The manifest is written once per run (``folds.json``); teachers, students and baselines of fold k all
read the same train / val / test patient lists, so a teacher's soft labels never carry a test patient.

Example:
    >>> groups = [f"p{i // 3}" for i in range(60)]           # 20 patients, 3 images each
    >>> labels = ["a" if i < 30 else "b" for i in range(60)]
    >>> manifest = make_fold_manifest(groups, labels, n_folds=4, val_fraction=0.2, seed=0)
    >>> len(manifest.folds), sorted(set(manifest.folds[0].test) & set(manifest.folds[0].train))
    (4, [])
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from sklearn.model_selection import ShuffleSplit, StratifiedGroupKFold, StratifiedShuffleSplit

from .atomic import atomic_write_json
from .errors import DataError

__all__ = ["PatientKFold", "FoldSplit", "FoldManifest", "make_fold_manifest", "load_manifest", "rename_groups",
           "inner_validation_split"]


class PatientKFold:
    """Stratified group k-fold that refuses splits it cannot make honestly.

    A thin layer over scikit-learn's ``StratifiedGroupKFold``: same ``split(X, y, groups)`` interface, but
    fewer groups than folds, or a class present in fewer groups than folds, is an error instead of a warning
    and an empty or class-less test fold.
    """

    def __init__(self, n_splits: int = 5, shuffle: bool = True, random_state: int | None = None,
                 group_name: str = "patient"):
        self.n_splits, self.shuffle, self.random_state, self.group_name = n_splits, shuffle, random_state, group_name

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        return self.n_splits

    def check(self, y: Sequence[Any] | None, groups: Sequence[Any]) -> None:
        groups = np.asarray(groups)
        n_groups = len(set(groups.tolist()))
        if n_groups < self.n_splits:
            raise DataError(f"{n_groups} {self.group_name}s cannot be split into {self.n_splits} folds "
                            f"(need at least one {self.group_name} per fold)")
        if y is None:
            return
        per_class: dict[Any, set] = defaultdict(set)
        for label, group in zip(np.asarray(y).tolist(), groups.tolist()):
            per_class[label].add(group)
        scarce = {label: len(members) for label, members in per_class.items() if len(members) < self.n_splits}
        if scarce:
            detail = ", ".join(f"{label!r}: {count}" for label, count in sorted(scarce.items(), key=str))
            raise DataError(f"classes with fewer {self.group_name}s than folds ({self.n_splits}): {detail}; "
                            f"use fewer folds or add {self.group_name}s")

    def split(self, X: Any, y: Sequence[Any] | None = None, groups: Sequence[Any] | None = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if groups is None:
            raise ValueError("groups (patient ids) are required: image-level splits leak patients")
        if len(groups) != len(X) or (y is not None and len(y) != len(X)):
            raise ValueError(f"X, y and groups differ in length: {len(X)}, {None if y is None else len(y)}, {len(groups)}")
        self.check(y, groups)
        labels = np.zeros(len(X), dtype=int) if y is None else np.asarray(y)
        splitter = StratifiedGroupKFold(self.n_splits, shuffle=self.shuffle,
                                        random_state=self.random_state if self.shuffle else None)
        with warnings.catch_warnings():
            # scikit-learn warns about scarce classes; check() has already refused the impossible cases.
            warnings.simplefilter("ignore", UserWarning)
            yield from splitter.split(np.zeros(len(X)), labels, np.asarray(groups))


@dataclass
class FoldSplit:
    """One fold: patient ids of each part and image counts per class."""

    fold: int
    train: list[str]
    val: list[str]
    test: list[str]
    class_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    val_share: float | None = None  # obtained: val groups / (train + val groups); the manifest records the share asked


def inner_validation_split(groups: Sequence[str], labels: Sequence[str] | None, val_fraction: float, seed: int,
                           group_name: str = "patient", where: str = "") -> tuple[list[str], list[str]]:
    """Hold out ``round(val_fraction * n_groups)`` whole groups, stratified by each group's class.

    A group's class is its most frequent label (ties: the first in sorted order). The share obtained is within
    half a group of the share asked. Returns ``(fit_groups, val_groups)``, each sorted.

    Example:
        >>> groups = [f"p{i}" for i in range(20)]
        >>> fit, val = inner_validation_split(groups, ["a"] * 10 + ["b"] * 10, 0.3, seed=0)
        >>> len(val), sum(int(g[1:]) < 10 for g in val)  # 6 of 20 held out, 3 of each class
        (6, 3)
    """
    label_of: dict[str, Counter] = defaultdict(Counter)
    for i, group in enumerate(groups):
        label_of[str(group)][None if labels is None else str(labels[i])] += 1
    names = sorted(label_of)
    n_val = int(round(val_fraction * len(names)))
    prefix = f"{where}: " if where else ""
    if n_val < 1 or n_val >= len(names):
        raise DataError(f"{prefix}{len(names)} training {group_name}s are too few for a validation share of "
                        f"{val_fraction} (it would hold out {n_val})")
    strata = np.asarray([sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0])))[0][0] or "" for c in
                         (label_of[n] for n in names)])
    counts = Counter(strata.tolist())
    stratify = labels is not None and len(counts) > 1 and min(counts.values()) >= 2 \
        and len(counts) <= n_val <= len(names) - len(counts)
    splitter = (StratifiedShuffleSplit if stratify else ShuffleSplit)(n_splits=1, test_size=n_val, random_state=seed)
    fit_idx, val_idx = next(splitter.split(np.zeros(len(names)), strata if stratify else None))
    return sorted(names[i] for i in fit_idx), sorted(names[i] for i in val_idx)


@dataclass
class FoldManifest:
    folds: list[FoldSplit]
    seed: int
    n_folds: int
    val_fraction: float
    group_name: str = "patient"
    n_items: int = 0
    n_groups: int = 0
    classes: list[str] = field(default_factory=list)

    @property
    def sha(self) -> str:
        """Content hash: checkpoints and predictions record it, so parts of two manifests never mix."""
        canonical = json.dumps([[f.fold, sorted(f.train), sorted(f.val), sorted(f.test)] for f in self.folds]
                               + [self.seed], sort_keys=True)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def fold(self, k: int) -> FoldSplit:
        for split in self.folds:
            if split.fold == k:
                return split
        raise KeyError(f"fold {k} is not in the manifest (folds 0..{self.n_folds - 1})")

    def to_dict(self) -> dict[str, Any]:
        return {"sha": self.sha, **asdict(self)}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    def validate(self) -> None:
        """Every group is in exactly one test set; train, val and test are disjoint within each fold."""
        seen: dict[str, int] = {}
        for split in self.folds:
            parts = {"train": set(split.train), "val": set(split.val), "test": set(split.test)}
            for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
                shared = parts[a] & parts[b]
                if shared:
                    raise DataError(f"fold {split.fold}: {len(shared)} {self.group_name}s in both {a} and {b}, "
                                    f"e.g. {sorted(shared)[:3]}")
            for group in split.test:
                if group in seen:
                    raise DataError(f"{self.group_name} {group!r} is in the test sets of folds {seen[group]} "
                                    f"and {split.fold}")
                seen[group] = split.fold


def make_fold_manifest(groups: Sequence[str], labels: Sequence[str] | None, n_folds: int, val_fraction: float,
                       seed: int, group_name: str = "patient") -> FoldManifest:
    """Outer stratified group k-fold over ``groups``, and an inner group-level validation split per fold.

    Args:
        groups: the patient/subject id of each item (image).
        labels: the class used for stratification of each item (None for regression).
        n_folds: outer folds.
        val_fraction: share of each training part's groups held out for inner validation (early stopping,
            best-epoch selection; stratified by class, to within half a group, see :func:`inner_validation_split`);
            never used for the reported test metrics. Each fold records the share obtained (``val_share``).
        seed: split seed.
    """
    groups_arr = np.asarray([str(g) for g in groups])
    labels_arr = None if labels is None else np.asarray([str(v) for v in labels])
    outer = PatientKFold(n_folds, shuffle=True, random_state=seed, group_name=group_name)
    folds = []
    for k, (train_idx, test_idx) in enumerate(outer.split(groups_arr, labels_arr, groups_arr)):
        fit_groups, val_groups = inner_validation_split(
            groups_arr[train_idx], None if labels_arr is None else labels_arr[train_idx], val_fraction,
            seed + 1000 + k, group_name, where=f"fold {k}")
        in_val = np.isin(groups_arr[train_idx], val_groups)
        fit_rel, val_rel = np.flatnonzero(~in_val), np.flatnonzero(in_val)
        part_indices = {"train": train_idx[fit_rel], "val": train_idx[val_rel], "test": test_idx}
        counts = {}
        for part, indices in part_indices.items():
            counter = Counter(labels_arr[indices].tolist()) if labels_arr is not None else Counter({"all": len(indices)})
            counts[part] = dict(sorted(counter.items()))
        folds.append(FoldSplit(
            fold=k,
            train=sorted(set(groups_arr[part_indices["train"]].tolist())),
            val=sorted(set(groups_arr[part_indices["val"]].tolist())),
            test=sorted(set(groups_arr[part_indices["test"]].tolist())),
            class_counts=counts,
            val_share=round(len(val_groups) / (len(val_groups) + len(fit_groups)), 6),
        ))
    manifest = FoldManifest(folds=folds, seed=seed, n_folds=n_folds, val_fraction=val_fraction,
                            group_name=group_name, n_items=len(groups_arr), n_groups=len(set(groups_arr.tolist())),
                            classes=sorted(set(labels_arr.tolist())) if labels_arr is not None else [])
    manifest.validate()
    return manifest


def rename_groups(manifest: FoldManifest, rename: dict[str, str]) -> FoldManifest:
    """The same folds under new group names (e.g. pseudonymous patient ids), each fold's list re-sorted.

    Splitting on the raw ids and renaming afterwards keeps the folds a function of the data and the seed only.

    Example:
        >>> m = make_fold_manifest(["a", "a", "b", "c", "d"], None, n_folds=2, val_fraction=0.5, seed=0)
        >>> renamed = rename_groups(m, {"a": "x", "b": "y", "c": "z", "d": "w"})
        >>> [len(f.test) for f in renamed.folds] == [len(f.test) for f in m.folds]
        True
    """
    missing = sorted({g for f in manifest.folds for g in (*f.train, *f.val, *f.test)} - set(rename))
    if missing:
        raise DataError(f"cannot rename {len(missing)} {manifest.group_name}(s) of the manifest, e.g. {missing[:3]}")
    folds = [FoldSplit(fold=f.fold, train=sorted(rename[g] for g in f.train), val=sorted(rename[g] for g in f.val),
                       test=sorted(rename[g] for g in f.test), class_counts=f.class_counts) for f in manifest.folds]
    renamed = FoldManifest(folds=folds, seed=manifest.seed, n_folds=manifest.n_folds,
                           val_fraction=manifest.val_fraction, group_name=manifest.group_name,
                           n_items=manifest.n_items, n_groups=manifest.n_groups, classes=list(manifest.classes))
    renamed.validate()
    return renamed


def load_manifest(path: str | os.PathLike) -> FoldManifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        folds = [FoldSplit(**f) for f in data.pop("folds")]
        stored_sha = data.pop("sha", None)
        manifest = FoldManifest(folds=folds, **data)
    except FileNotFoundError:
        raise DataError(f"{path}: fold manifest not found") from None
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: not a valid fold manifest ({exc})") from None
    if stored_sha is not None and stored_sha != manifest.sha:
        raise DataError(f"{path}: content does not match its recorded hash (edited by hand?)")
    manifest.validate()
    return manifest
