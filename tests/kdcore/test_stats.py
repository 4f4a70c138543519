import numpy as np
import pytest

from kdcore.stats import fold_summary, group_bootstrap, mcnemar, paired_group_bootstrap


def test_bootstrap_resamples_whole_patients():
    # Patient "a" has 9 correct images, patient "b" 1 wrong image: image-level resampling would
    # give accuracies near 0.9; patient-level resampling can only give 0.0, 0.9 or 1.0.
    correct = np.array([1.0] * 9 + [0.0])
    groups = ["a"] * 9 + ["b"]
    seen = set()
    out = group_bootstrap(lambda i: seen.add(round(correct[i].mean(), 6)) or correct[i].mean(), 10, groups,
                          n_boot=300, seed=0)
    assert seen <= {0.0, 0.9, 1.0}
    assert out["n_groups"] == 2 and out["estimate"] == pytest.approx(0.9)
    assert out["ci"][0] <= 0.9 <= out["ci"][1]


def test_bootstrap_interval_shrinks_with_more_patients():
    rng = np.random.default_rng(0)
    widths = []
    for n in (20, 400):
        values = rng.random(n)
        out = group_bootstrap(lambda i: values[i].mean(), n, [str(i) for i in range(n)], n_boot=400, seed=1)
        widths.append(out["ci"][1] - out["ci"][0])
    assert widths[1] < widths[0] / 2


def test_paired_difference_of_identical_models_is_zero():
    values = np.random.default_rng(1).random(30)
    out = paired_group_bootstrap(lambda i: values[i].mean(), lambda i: values[i].mean(), 30,
                                 [str(i // 3) for i in range(30)], n_boot=100)
    assert out["estimate"] == 0 and out["ci"] == [0.0, 0.0]


def test_mcnemar_exact_binomial():
    a = [True] * 10 + [False] * 2 + [True] * 5
    b = [False] * 10 + [True] * 2 + [True] * 5
    out = mcnemar(a, b)
    assert out["only_a_correct"] == 10 and out["only_b_correct"] == 2
    # two-sided exact binomial, 10 of 12 discordant pairs: 2 * P(X >= 10 | n=12, p=.5)
    from math import comb
    expected = 2 * sum(comb(12, k) for k in range(10, 13)) / 2 ** 12
    assert out["p_value"] == pytest.approx(expected)


def test_fold_summary_uses_sample_std():
    out = fold_summary([1.0, 2.0, 3.0])
    assert out == {"mean": 2.0, "std": 1.0}
    assert fold_summary([float("nan")]) == {"mean": None, "std": None}
