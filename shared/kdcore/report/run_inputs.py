"""Read what a run folder holds for a report, and write the report back atomically.

A report is rebuilt from files only (see docs/run-directory.md): ``config.yaml``, ``folds.json``,
``folds/fold_<k>/<model>/{predictions.csv, model.json, done.json}`` and the optional ``audit.json``,
``model_profile.json``, ``log.jsonl``, ``dataset.json``. A model's fold counts once its ``done.json`` exists
(the runner writes it last); folds without it are listed as missing, never half-read.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..cv import FoldManifest, load_manifest
from ..errors import DataError
from ..predictions import read_predictions
from ..run_folder import Coverage, RunDir

__all__ = ["RunInputs", "read_run", "audit_section", "csv_text", "safe_name", "read_json", "read_log_records", "audit_summary", "audit_lines", "profile_rows",
           "PROFILE_HEADER", "json_safe", "write_report", "training_event_notes"]

PROFILE_HEADER = ["model", "architecture", "parameters (M)", "GFLOPs", "latency median (ms, batch 1)", "input"]


def training_event_notes(records: list[dict]) -> list[str]:
    """Messages of the engine's ``split == "event"`` records in log.jsonl (e.g. a plateau before the SWA phase),
    once each, so the report says what changed a model's planned training."""
    return list(dict.fromkeys(str(r["message"]) for r in records if r.get("split") == "event" and r.get("message")))


@dataclass
class RunInputs:
    """The parts of a run folder a report needs.

    Attributes:
        models: model name -> completed folds (``done.json`` present), in report order.
        incomplete: model name -> folds with a model folder but no ``done.json`` (still training or killed).
    """

    path: Path
    config: dict[str, Any]
    manifest: FoldManifest
    models: dict[str, list[int]]
    incomplete: dict[str, list[int]] = field(default_factory=dict)
    audit: dict | None = None
    profile: dict | None = None
    log: list[dict] = field(default_factory=list)

    def model_dir(self, model: str, fold: int) -> Path:
        return RunDir(self.path).model_dir(model, fold)

    def missing_folds(self, model: str) -> list[int]:
        done = set(self.models.get(model, []))
        return [f.fold for f in self.manifest.folds if f.fold not in done]

    def coverage(self, expected: Sequence[str]) -> Coverage:
        """Finished and missing folds of each model of ``expected`` (the report's ``coverage``, as data)."""
        return RunDir(self.path).coverage(expected, [f.fold for f in self.manifest.folds])

    def coverage_notes(self, expected: Sequence[str]) -> list[str]:
        """One note per model of ``expected`` that is missing folds, or has none completed."""
        return self.coverage(expected).notes()

    def model_json(self, model: str) -> dict:
        """``model.json`` of the first completed fold of ``model``."""
        for fold in self.models.get(model, []):
            path = self.model_dir(model, fold) / "model.json"
            if path.exists():
                return read_json(path)
        raise DataError(f"{self.path}: no model.json for model {model!r} in any completed fold")

    def predictions(self, model: str, fold: int, required: Sequence[str] = ()) -> list[dict[str, str]]:
        path = self.model_dir(model, fold) / "predictions.csv"
        rows = read_predictions(path, required)
        for line, row in enumerate(rows, start=2):
            if "fold" in row and row["fold"] != "" and str(row["fold"]) != str(fold):
                raise DataError(f"{path}:{line}: fold column says {row['fold']!r}, folder is fold_{fold}")
        self._check_against_manifest(path, rows, model, fold)
        return rows

    def _check_against_manifest(self, path: Path, rows: list[dict[str, str]], model: str, fold: int) -> None:
        """Every test item of the fold exactly once, and nothing else: a truncated or edited file is refused
        instead of being scored on what is left of it."""
        done = RunDir(self.path).done_record(model, fold) or {}
        recorded = done.get("predictions") if isinstance(done.get("predictions"), dict) else {}
        if recorded.get("sha256") and recorded["sha256"] != _sha256(path):
            raise DataError(f"{path}: changed since fold {fold} of {model} finished ({len(rows)} rows now, "
                            f"{recorded.get('rows')} when written); re-run the fold: delete its folder, then --resume")
        seen: dict[str, int] = {}
        for line, row in enumerate(rows, start=2):
            key = row.get("id")
            if key is None:
                break
            if key in seen:
                raise DataError(f"{path}:{line}: image {key!r} predicted again (first at line {seen[key]})")
            seen[key] = line
        group = self.manifest.group_name
        test = set(self.manifest.fold(fold).test)
        outside = [(line, row[group]) for line, row in enumerate(rows, start=2) if row.get(group) not in (None, "")
                   and row[group] not in test]
        if outside:
            raise DataError(f"{path}:{outside[0][0]}: {group} {outside[0][1]!r} is not a test {group} of fold {fold}")
        counts = done.get("images", done.get("faces"))  # what the fold's training recorded it tested on
        expected = counts.get("test") if isinstance(counts, dict) else None
        if expected is not None and len(rows) != expected:
            raise DataError(f"{path}: {len(rows)} prediction rows for the {expected} test images of fold {fold} "
                            f"(truncated or edited?); re-run the fold: delete its folder, then --resume")


def read_json(path: str | os.PathLike, required: bool = True) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if required:
            raise DataError(f"{path}: not found") from None
        return None
    except ValueError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def read_log_records(path: str | os.PathLike) -> list[dict]:
    """Records of ``log.jsonl`` (NaN allowed, as the run logs it); a torn last line (killed run) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number == len(lines):
                continue
            raise DataError(f"{path}:{number}: not a JSON record") from None
        if isinstance(record, dict):
            records.append(record)
    return records


def _order(names: Sequence[str], preferred: Sequence[str]) -> list[str]:
    known = [n for n in preferred if n in names]
    return known + sorted(n for n in names if n not in preferred)


def read_run(run_dir: str | os.PathLike, preferred_order: Sequence[str] = ()) -> RunInputs:
    """Index a run folder: manifest, config, completed folds per model, optional files."""
    path = Path(run_dir)
    if not path.is_dir():
        raise DataError(f"{path}: run folder not found")
    config_file = path / "config.yaml"
    try:
        config = yaml.safe_load(config_file.read_text(encoding="utf-8")) if config_file.exists() else {}
    except yaml.YAMLError as exc:
        raise DataError(f"{config_file}: not valid YAML ({exc})") from None
    manifest = load_manifest(path / "folds.json")
    done, incomplete = RunDir(path).models_on_disk([split.fold for split in manifest.folds], manifest.sha)
    names = _order(sorted(set(done) | set(incomplete)), preferred_order)
    models = {n: done[n] for n in names if n in done}
    return RunInputs(path=path, config=config or {}, manifest=manifest, models=models,
                     incomplete={n: incomplete[n] for n in names if n in incomplete},
                     audit=read_json(path / "audit.json", required=False),
                     profile=read_json(path / "model_profile.json", required=False),
                     log=read_log_records(path / "log.jsonl"))


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def audit_summary(audit: dict | None, max_listed: int = 200) -> dict | None:
    """The scalar facts of ``audit.json`` (counts, problem kinds, excluded ids), without the full problem list."""
    if audit is None:
        return None
    summary: dict[str, Any] = {}
    for key, value in audit.items():
        if key == "problems":
            continue
        if _scalars_only(value):
            summary[key] = value
    excluded = audit.get("excluded")
    if isinstance(excluded, list):
        summary["n_excluded"] = len(excluded)
        summary["excluded"] = excluded[:max_listed]
    if isinstance(audit.get("problems"), list):
        summary["n_problems"] = len(audit["problems"])
    return summary


def audit_lines(summary: dict, max_shown: int = 50) -> tuple[list[str], str | None]:
    """Readable facts of an :func:`audit_summary` and a line naming the excluded items (None without any)."""
    facts = []
    for key, value in summary.items():
        if key == "excluded":
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        facts.append(f"{key}: {value}")
    excluded = summary.get("excluded") or []
    if not excluded:
        return facts, None
    more = summary.get("n_excluded", len(excluded)) - min(len(excluded), max_shown)
    line = "Excluded: " + ", ".join(map(str, excluded[:max_shown])) + (f" ... and {more} more" if more > 0 else "")
    return facts, line


def safe_name(name: str) -> str:
    """A model name usable as a file name."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def csv_text(header: list[str], rows: list[list[Any]]) -> str:
    """A CSV document (None written as an empty cell), for the report's per-fold tables."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return buffer.getvalue()


def audit_section(doc: Any, protocol: dict) -> None:
    """The integrity-gate summary and the models with unfinished folds, in an HtmlDocument."""
    audit = protocol.get("audit")
    if audit:
        facts, excluded = audit_lines(audit)
        doc.paragraph("Data audit (integrity gate):").bullets(facts)
        if excluded:
            doc.paragraph(excluded)
    else:
        doc.paragraph("No audit.json in this run folder: no integrity-gate summary available.", "muted")
    for name, folds in protocol.get("incomplete", {}).items():
        doc.paragraph(f"{name}: fold(s) {folds} have a folder but no done.json (still running or interrupted); "
                      "they are not reported.", "warn")


def profile_rows(profiles: dict[str, dict | None]) -> list[list[Any]]:
    """Table rows (see ``PROFILE_HEADER``) from ``model_profile.json`` entries
    ``{params, flops, latency_ms: {median_ms, ...} | number, input_size, arch?}``; models without one are skipped."""
    rows = []
    for name, profile in profiles.items():
        if not profile:
            continue
        latency = profile.get("latency_ms")
        median = latency.get("median_ms") if isinstance(latency, dict) else latency
        params, flops = profile.get("params"), profile.get("flops")
        rows.append([name, profile.get("arch") or "", None if params is None else params / 1e6,
                     None if flops is None else flops / 1e9, median, str(profile.get("input_size", ""))])
    return rows


def _scalars_only(value: Any, depth: int = 3) -> bool:
    """Scalars, or dicts of them nested at most ``depth`` deep (counts, per-subset counts, kinds)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return True
    return depth > 0 and isinstance(value, dict) and all(_scalars_only(v, depth - 1) for v in value.values())


def json_safe(value: Any) -> Any:
    """Strict-JSON version of ``value``: NaN/inf -> None, numpy scalars/arrays -> Python, tuples -> lists."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_report(run_dir: str | os.PathLike, report: dict, html: str, files: dict[str, bytes | str]) -> None:
    """Write ``RUN/report/`` (``files``: name -> content), then ``report.json``, then ``report.html``.

    The folder is built beside the old one and swapped in, so readers see the old or the new report
    folder, never a mix; ``report.html`` is written last, so a page a person opens always has its JSON.
    """
    run = Path(run_dir)
    staging, backup, final = run / ".report.staging", run / ".report.old", run / "report"
    bad = [name for name in files if Path(name).name != name or name in ("", ".", "..")]
    if bad:
        raise ValueError(f"report file names must be plain names, got {bad}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        for name, content in sorted(files.items()):
            if isinstance(content, bytes):
                atomic_write_bytes(staging / name, content)
            else:
                atomic_write_text(staging / name, content)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(backup, ignore_errors=True)
    if final.exists():
        final.rename(backup)
    staging.rename(final)
    shutil.rmtree(backup, ignore_errors=True)
    atomic_write_json(run / "report.json", json_safe(report))
    atomic_write_text(run / "report.html", html)  # last: an HTML report is never there without its JSON
