import itertools

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

from medkd.metrics import classification_metrics, confusion, flat_metrics, ovr_auc, reliability_bins, roc_curves


def one_hot_probs(preds, n_classes, top=0.8):
    """Probabilities whose argmax is ``preds`` (rows sum to 1)."""
    probs = np.full((len(preds), n_classes), (1 - top) / (n_classes - 1))
    probs[np.arange(len(preds)), preds] = top
    return probs


def test_three_class_confusion_counted_by_hand():
    # true:  A A A A | B B B | C C
    # pred:  A A B C | B B A | C C
    targets = [0, 0, 0, 0, 1, 1, 1, 2, 2]
    preds = [0, 0, 1, 2, 1, 1, 0, 2, 2]
    m = classification_metrics(targets, one_hot_probs(preds, 3), ["A", "B", "C"])
    assert m["confusion_matrix"] == [[2, 1, 1], [1, 2, 0], [0, 0, 2]]
    assert m["accuracy"] == pytest.approx(6 / 9)
    a, b, c = (m["per_class"][k] for k in "ABC")
    # A: TP 2, FN 2, FP 1 (the B predicted A), TN 4
    assert a["sensitivity"] == pytest.approx(2 / 4) and a["specificity"] == pytest.approx(4 / 5)
    assert a["precision"] == pytest.approx(2 / 3) and a["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 2))
    # B: TP 2, FN 1, FP 1, TN 5
    assert b["sensitivity"] == pytest.approx(2 / 3) and b["specificity"] == pytest.approx(5 / 6)
    # C: TP 2, FN 0, FP 1, TN 6
    assert c["sensitivity"] == 1.0 and c["specificity"] == pytest.approx(6 / 7) and c["precision"] == pytest.approx(2 / 3)
    assert [a["support"], b["support"], c["support"]] == [4, 3, 2]
    assert m["sensitivity"] == pytest.approx((2 / 4 + 2 / 3 + 1) / 3)
    assert m["specificity"] == pytest.approx((4 / 5 + 5 / 6 + 6 / 7) / 3)
    assert m["f1"] == pytest.approx(f1_score(targets, preds, average="macro"))


def test_confusion_matches_sklearn():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 4, 300), rng.integers(0, 4, 300)
    assert np.array_equal(confusion(t, p, 4), confusion_matrix(t, p, labels=range(4)))


def test_auc_equals_manual_pairwise_count_with_ties():
    positive = np.array([1, 1, 0, 0, 1, 0, 0], bool)
    scores = np.array([0.9, 0.4, 0.4, 0.1, 0.7, 0.8, 0.2])
    pairs = [(s_p > s_n) + 0.5 * (s_p == s_n)
             for s_p, s_n in itertools.product(scores[positive], scores[~positive])]
    assert ovr_auc(positive, scores) == pytest.approx(sum(pairs) / len(pairs))
    # 3 positives x 4 negatives: 0.9 beats all 4, 0.7 beats 3, 0.4 beats 2 and ties 1 -> (4 + 3 + 2.5) / 12
    assert ovr_auc(positive, scores) == pytest.approx(9.5 / 12)


def test_auc_matches_sklearn_per_class():
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 3, 200)
    logits = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[targets]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = classification_metrics(targets, probs, ["x", "y", "z"])
    for c, name in enumerate("xyz"):
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(targets == c, probs[:, c]))
    assert m["auc"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))


def test_undefined_values_are_none_and_macro_refuses_partial_classes():
    probs = one_hot_probs([0, 0, 1], 3)
    m = classification_metrics([0, 0, 1], probs, ["A", "B", "C"])  # class C never occurs
    assert m["per_class"]["C"]["auc"] is None and m["per_class"]["C"]["sensitivity"] is None
    assert m["auc"] is None and m["sensitivity"] is None
    assert m["accuracy"] == 1.0
    only = classification_metrics([1, 1], one_hot_probs([1, 0], 2), ["A", "B"])
    assert only["per_class"]["B"]["auc"] is None  # the only class present
    assert only["per_class"]["B"]["specificity"] is None


def ece(targets, probs) -> float:
    return classification_metrics(targets, probs, ["A", "B"])["ece"]


def test_ece_zero_for_perfectly_calibrated_bins():
    # 10 predictions at confidence 0.8 with 8 right, 5 at 0.6 with 3 right: accuracy equals confidence per bin
    targets = np.array([0] * 8 + [1] * 2 + [0] * 3 + [1] * 2)
    probs = np.array([[0.8, 0.2]] * 10 + [[0.6, 0.4]] * 5)
    assert ece(targets, probs) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_overconfident_set():
    # always 0.9 confident, right half the time: gap 0.4 in the only occupied bin
    targets = np.array([0, 1] * 10)
    probs = np.array([[0.9, 0.1]] * 20)
    assert ece(targets, probs) == pytest.approx(0.4)
    # two bins: 0.9 (4 of 4 right, gap 0.1) and 0.55 (1 of 4 right, gap 0.3) -> (4*0.1 + 4*0.3) / 8
    targets = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    probs = np.array([[0.9, 0.1]] * 4 + [[0.55, 0.45]] * 4)
    assert ece(targets, probs) == pytest.approx(0.2)


def test_reliability_bins_edges_and_counts():
    probs = np.array([[1 / 15 * 8, 1 - 1 / 15 * 8], [1.0, 0.0], [0.99, 0.01]])
    bins = reliability_bins([0, 0, 1], probs)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 3
    assert bins[7]["count"] == 1  # confidence exactly 8/15 lies in (7/15, 8/15]
    assert bins[14]["count"] == 2 and bins[14]["accuracy"] == pytest.approx(0.5)
    assert bins[14]["confidence"] == pytest.approx((1.0 + 0.99) / 2)
    assert bins[0]["confidence"] is None and bins[0]["accuracy"] is None


def test_input_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        classification_metrics([0, 1], np.array([[0.5, 0.6], [0.5, 0.5]]), ["A", "B"])
    with pytest.raises(ValueError, match="columns"):
        classification_metrics([0, 1], np.array([[0.5, 0.5], [0.5, 0.5]]), ["A", "B", "C"])
    with pytest.raises(ValueError, match="0..1"):
        classification_metrics([0, 2], np.array([[0.5, 0.5], [0.5, 0.5]]), ["A", "B"])


def test_flat_metrics_and_roc_curves():
    probs = one_hot_probs([0, 1, 1, 0], 2)
    m = classification_metrics([0, 1, 0, 0], probs, ["A", "B"])
    flat = flat_metrics(m)
    assert flat["accuracy"] == 0.75 and flat["A/sensitivity"] == pytest.approx(2 / 3)
    assert {"B/auc", "ece", "f1"} <= set(flat)
    curves = roc_curves([0, 1, 0, 0], probs, ["A", "B"])
    assert curves["A"]["fpr"][0] == 0.0 and curves["A"]["tpr"][-1] == 1.0
