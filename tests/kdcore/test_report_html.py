"""kdcore.report: HTML builder, plots, multi-metric bootstrap and run-folder reading/writing."""

import base64
import json
import math
import re

import numpy as np
import pytest

from kdcore.atomic import atomic_write_json
from kdcore.cv import make_fold_manifest
from kdcore.errors import DataError
from kdcore.report import (HtmlDocument, audit_lines, audit_summary, bar_plot, bootstrap_samples, difference_samples, fmt, fmt_ci,
                           fmt_mean_std, heatmap, json_safe, line_plot, paired_bootstrap_samples, percentile_ci,
                           profile_rows, read_log_records, read_run, summarize_samples, training_curves, write_report)
from kdcore.stats import group_bootstrap


def test_document_escapes_text_and_inlines_figures(tmp_path):
    png = line_plot({"a": ([0, 1], [0, 1])}, "x", "y")
    doc = HtmlDocument("T <1>")
    doc.heading("Results & more").paragraph("<b>not bold</b>", "note").bullets(["x < y"])
    doc.table(["name", "value", "missing"], [["acc", 0.91234, None], ["n", 1200, float("nan")]], caption="cap")
    doc.figure(png, "a plot").figure(None)  # None is skipped
    doc.raw("<hr>")
    html = doc.render()
    assert "T &lt;1&gt;" in html and "&lt;b&gt;not bold&lt;/b&gt;" in html and "x &lt; y" in html
    assert "0.912" in html and "1,200" in html and html.count("n/a") == 2 and "<hr>" in html
    sources = re.findall(r'src="([^"]*)"', html)
    assert len(sources) == 1 and sources[0].startswith("data:image/png;base64,")
    assert base64.b64decode(sources[0].split(",", 1)[1]) == png
    assert "<script" not in html and "<link" not in html and "http" not in html
    doc.save(tmp_path / "r.html")
    assert (tmp_path / "r.html").read_text() == html


def test_document_rejects_bad_input():
    doc = HtmlDocument("x")
    with pytest.raises(ValueError, match="2 cells for 3 columns"):
        doc.table(["a", "b", "c"], [[1, 2]])
    with pytest.raises(ValueError, match="PNG"):
        doc.figure(b"GIF89a")
    with pytest.raises(ValueError, match="level"):
        doc.heading("x", 7)


def test_formatting_helpers():
    assert fmt(None) == "n/a" and fmt(0.5) == "0.500" and fmt(3) == "3" and fmt(True) == "True"
    assert fmt_ci(0.5, [0.4, 0.6]) == "0.500 [0.400, 0.600]" and fmt_ci(0.5, None) == "0.500"
    assert fmt_mean_std(0.5, 0.1, 2) == "0.50 ± 0.10" and fmt_mean_std(0.5, None) == "0.500"
    assert fmt_mean_std(None, None) == "n/a"


def test_plots_return_png_and_are_deterministic():
    records = [{"model": "m", "fold": f, "epoch": e, "split": "train", "loss": 1 / (e + 1), "val_auc": 0.5 + e / 10,
                "swa": False} for f in range(2) for e in range(3)]
    records.append({"model": "m", "fold": 0, "epoch": 2, "split": "swa", "val_auc": 0.8})
    first = training_curves(records)
    assert first[:4] == b"\x89PNG" and training_curves(records) == first
    assert training_curves([]) is None
    assert heatmap([[3, 1], [0, 4]], ["a", "b"], ["a", "b"], normalize_rows=True)[:4] == b"\x89PNG"
    assert bar_plot(["x", "y"], {"m": [0.5, None]}, {"m": [[0.4, 0.6], None]})[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="categories"):
        bar_plot(["x"], {"m": [1, 2]})
    with pytest.raises(ValueError, match="does not match"):
        heatmap([[1, 2]], ["a", "b"], ["a"])


def test_bootstrap_samples_agree_with_group_bootstrap():
    rng = np.random.default_rng(0)
    values = rng.random(40)
    groups = [f"p{i // 4}" for i in range(40)]
    estimate, samples = bootstrap_samples(lambda i: {"mean": values[i].mean()}, 40, groups, n_boot=200, seed=3)
    reference = group_bootstrap(lambda i: values[i].mean(), 40, groups, n_boot=200, seed=3)
    assert estimate["mean"] == pytest.approx(reference["estimate"])
    assert percentile_ci(samples, "mean") == pytest.approx(reference["ci"])


def test_paired_samples_use_the_same_patients():
    values = np.random.default_rng(1).random(30)
    groups = [str(i // 3) for i in range(30)]
    estimate, diffs = paired_bootstrap_samples(lambda i: {"m": values[i].mean()}, lambda i: {"m": values[i].mean() - 0.1},
                                               30, groups, n_boot=50)
    assert estimate["m"] == pytest.approx(0.1) and all(d["m"] == pytest.approx(0.1) for d in diffs)
    _, a = bootstrap_samples(lambda i: {"m": values[i].mean()}, 30, groups, n_boot=50, seed=5)
    _, b = bootstrap_samples(lambda i: {"m": values[i].mean()}, 30, groups, n_boot=50, seed=5)
    assert all(d["m"] == 0 for d in difference_samples(a, b))  # same seed, same groups: identical resamples


def test_undefined_samples_are_counted_not_averaged():
    samples = [{"a": 1.0, "b": None}, {"a": 2.0, "b": float("nan")}, {"a": 3.0, "b": 1.0}]
    intervals, undefined = summarize_samples(samples, ["a", "b"])
    assert undefined == {"b": 2} and intervals["b"] == [1.0, 1.0]
    assert percentile_ci([{"a": None}], "a") is None


def test_json_safe_makes_strict_json():
    out = json_safe({"a": float("nan"), "b": np.float32(1.5), "c": (np.int64(2), math.inf), "d": np.arange(2)})
    assert out == {"a": None, "b": 1.5, "c": [2, None], "d": [0, 1]}
    json.dumps(out, allow_nan=False)


def make_folder(tmp_path):
    groups = [f"p{i // 2}" for i in range(24)]
    manifest = make_fold_manifest(groups, None, n_folds=3, val_fraction=0.25, seed=0)
    manifest.save(tmp_path / "folds.json")
    for fold in range(3):
        for name in ("baseline", "zeta", "student", "teacher"):
            folder = tmp_path / "folds" / f"fold_{fold}" / name
            folder.mkdir(parents=True)
            if not (name == "student" and fold == 2):
                atomic_write_json(folder / "done.json", {"manifest": manifest.sha})
    (tmp_path / "folds" / "fold_0" / "teacher.merging").mkdir()
    return manifest


def test_read_run_orders_models_and_lists_missing_folds(tmp_path):
    make_folder(tmp_path)
    run = read_run(tmp_path, ("teacher", "student", "baseline"))
    assert list(run.models) == ["teacher", "student", "baseline", "zeta"]
    assert run.models["student"] == [0, 1] and run.missing_folds("student") == [2]
    assert run.incomplete == {"student": [2]}
    assert run.audit is None and run.profile is None and run.log == []


def test_read_run_refuses_mixed_manifests(tmp_path):
    make_folder(tmp_path)
    atomic_write_json(tmp_path / "folds" / "fold_1" / "zeta" / "done.json", {"manifest": "another"})
    with pytest.raises(DataError, match="mixes two runs"):
        read_run(tmp_path)


def test_log_records_skip_a_torn_last_line(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"epoch": 0, "loss": NaN}\n{"epoch": 1, "loss": 0.5}\n{"epoch": 2, "lo')
    records = read_log_records(path)
    assert len(records) == 2 and math.isnan(records[0]["loss"])
    path.write_text('{"epoch": 0}\nbroken\n{"epoch": 1}\n')
    with pytest.raises(DataError, match="log.jsonl:2"):
        read_log_records(path)


def test_audit_summary_and_profile_rows():
    audit = {"n_blocking": 0, "counts": {"images": 10, "per_subset": {"a": {"faces": 3}}},
             "problems": [{"kind": "x"}] * 3, "excluded": ["a", "b"]}
    summary = audit_summary(audit, max_listed=1)
    assert summary == {"n_blocking": 0, "counts": audit["counts"], "n_excluded": 2, "excluded": ["a"], "n_problems": 3}
    facts, excluded = audit_lines(summary)
    assert "n_blocking: 0" in facts and excluded == "Excluded: a ... and 1 more"
    assert audit_lines({"n_blocking": 1}) == (["n_blocking: 1"], None)
    rows = profile_rows({"s": {"params": 2_000_000, "flops": 3e9, "latency_ms": {"median_ms": 4.0}, "input_size": 224},
                         "t": None})
    assert rows == [["s", "", 2.0, 3.0, 4.0, "224"]]


def test_write_report_replaces_the_folder(tmp_path):
    write_report(tmp_path, {"v": 1}, "<html>1</html>", {"old.csv": "a\n", "plot.png": b"\x89PNG"})
    write_report(tmp_path, {"v": float("nan")}, "<html>2</html>", {"new.csv": "b\n"})
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == ["new.csv"]
    assert json.loads((tmp_path / "report.json").read_text()) == {"v": None}
    assert (tmp_path / "report.html").read_text() == "<html>2</html>"
    assert not (tmp_path / ".report.staging").exists() and not (tmp_path / ".report.old").exists()
    with pytest.raises(ValueError, match="plain names"):
        write_report(tmp_path, {}, "", {"../x.csv": ""})
