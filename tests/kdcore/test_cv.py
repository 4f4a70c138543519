import numpy as np
import pytest

from kdcore.cv import PatientKFold, load_manifest, make_fold_manifest
from kdcore.errors import DataError


def random_cohort(seed: int, n_patients: int = 30, classes=("NORMAL", "DRUSEN", "CNV")):
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for p in range(n_patients):
        label = classes[p % len(classes)]
        for _ in range(rng.integers(1, 6)):
            groups.append(f"{label}/{p}")
            labels.append(label)
    return groups, labels


@pytest.mark.parametrize("seed", range(12))
def test_no_patient_leaks_across_folds_for_any_seed(seed):
    groups, labels = random_cohort(seed)
    manifest = make_fold_manifest(groups, labels, n_folds=5, val_fraction=0.2, seed=seed)
    all_patients = set(groups)
    tests = [set(f.test) for f in manifest.folds]
    assert set().union(*tests) == all_patients  # every patient tested once...
    assert sum(len(t) for t in tests) == len(all_patients)  # ...and only once
    for split in manifest.folds:
        train, val, test = set(split.train), set(split.val), set(split.test)
        assert not (train & test) and not (val & test) and not (train & val)
        assert train | val | test == all_patients
        assert val, "inner validation split must not be empty"
        # stratified: every class is present in each test fold
        assert set(split.class_counts["test"]) == {"NORMAL", "DRUSEN", "CNV"}


def test_manifest_round_trip_and_hash(tmp_path):
    groups, labels = random_cohort(0)
    manifest = make_fold_manifest(groups, labels, n_folds=3, val_fraction=0.2, seed=1)
    manifest.save(tmp_path / "folds.json")
    loaded = load_manifest(tmp_path / "folds.json")
    assert loaded.sha == manifest.sha and loaded.folds == manifest.folds
    assert make_fold_manifest(groups, labels, 3, 0.2, seed=2).sha != manifest.sha


def test_edited_manifest_is_refused(tmp_path):
    groups, labels = random_cohort(0)
    make_fold_manifest(groups, labels, 3, 0.2, seed=1).save(tmp_path / "folds.json")
    text = (tmp_path / "folds.json").read_text()
    (tmp_path / "folds.json").write_text(text.replace('"NORMAL/0"', '"NORMAL/99"', 1))
    assert '"NORMAL/99"' in (tmp_path / "folds.json").read_text()
    with pytest.raises(DataError, match="hash"):
        load_manifest(tmp_path / "folds.json")


def test_fewer_patients_than_folds_is_refused():
    with pytest.raises(DataError, match="3 patients cannot be split into 5 folds"):
        make_fold_manifest(["a", "b", "c"], ["x", "y", "x"], n_folds=5, val_fraction=0.2, seed=0)


def test_class_with_fewer_patients_than_folds_is_refused():
    groups, labels = random_cohort(0, n_patients=30)
    groups += ["rare/1", "rare/2"]
    labels += ["DME", "DME"]
    with pytest.raises(DataError, match=r"'DME': 2"):
        make_fold_manifest(groups, labels, n_folds=5, val_fraction=0.2, seed=0)


def test_splitter_offers_sklearn_interface():
    groups, labels = random_cohort(3)
    splitter = PatientKFold(n_splits=4, random_state=0)
    assert splitter.get_n_splits() == 4
    folds = list(splitter.split(groups, labels, groups))
    assert len(folds) == 4
    for train, test in folds:
        assert not set(np.asarray(groups)[train]) & set(np.asarray(groups)[test])
    with pytest.raises(ValueError, match="groups"):
        next(splitter.split(groups, labels))


def test_regression_split_without_labels():
    groups = [f"s{i // 2}" for i in range(40)]
    manifest = make_fold_manifest(groups, None, n_folds=4, val_fraction=0.25, seed=0, group_name="subject")
    assert sorted(g for f in manifest.folds for g in f.test) == sorted(set(groups))


@pytest.mark.parametrize("val_fraction", [0.1, 0.15, 0.2, 0.3, 0.4, 0.45])
@pytest.mark.parametrize("stratified", [True, False])
def test_inner_validation_holds_out_the_share_asked(val_fraction, stratified):
    # 61 patients of uneven size in 3 classes; the old inner k-fold gave 1/round(1/f) (0.45 -> 0.5, 0.15 -> 0.143)
    rng = np.random.default_rng(3)
    groups, labels = [], []
    for p in range(61):
        groups += [f"p{p}"] * int(rng.integers(1, 6))
        labels += [("a", "b", "c")[p % 3]] * (len(groups) - len(labels))
    manifest = make_fold_manifest(groups, labels if stratified else None, 5, val_fraction, seed=1)
    assert manifest.val_fraction == val_fraction
    patient_class = dict(zip(groups, labels))
    for split in manifest.folds:
        n_train = len(split.train) + len(split.val)
        assert abs(len(split.val) - val_fraction * n_train) <= 1, (split.fold, len(split.val), n_train)
        assert split.val_share == pytest.approx(len(split.val) / n_train, abs=1e-6)
        if stratified:  # each class within one patient of its own share
            for c in "abc":
                in_class = [p for p in split.train + split.val if patient_class[p] == c]
                held = [p for p in split.val if patient_class[p] == c]
                assert abs(len(held) - val_fraction * len(in_class)) <= 1, (c, len(held), len(in_class))


def test_val_share_is_saved_and_loaded(tmp_path):
    groups = [f"p{i // 2}" for i in range(60)]
    manifest = make_fold_manifest(groups, ["a", "b"] * 30, 3, 0.3, seed=0)
    manifest.save(tmp_path / "folds.json")
    loaded = load_manifest(tmp_path / "folds.json")
    assert [f.val_share for f in loaded.folds] == [f.val_share for f in manifest.folds]
    assert all(0.25 < f.val_share < 0.35 for f in loaded.folds) and loaded.sha == manifest.sha
