"""What a sweep leaves in its folder: ``trials.csv``, ``sweep.html`` and ``recommended.yaml``."""

from __future__ import annotations

import math
from typing import Any

import yaml

from ..atomic import atomic_write_text
from ..report import HtmlDocument, csv_text, figure_png, new_figure
from ..logs import get_logger

__all__ = ["write_outputs", "trial_rows", "recommend"]
log = get_logger(__name__)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def trial_rows(sweep: Any, trials: list) -> tuple[list[str], list[list[Any]]]:
    keys = [p.key for p in sweep.space.params]
    objective = sweep.space.objective
    metric_names: list[str] = []
    fidelity_names: list[str] = []
    for trial in trials:
        for name in (trial.user_attrs.get("val_metrics") or {}):
            if name not in metric_names:
                metric_names.append(name)
        for name, value in (trial.user_attrs.get("fidelity") or {}).items():
            if name not in fidelity_names and (_finite(value) or value is None):
                fidelity_names.append(name)
    header = ["trial", "state", "value", "latency_ms", *keys, *[f"val_{m}" for m in metric_names],
              *[f"fidelity_{f}" for f in fidelity_names], "seconds", "worker", "note"]
    rows = []
    for trial in trials:
        # Optuna keeps a pruned trial's last reported value as its value: shown in the note, not as a score.
        value = trial.values[0] if trial.values and trial.state.name == "COMPLETE" else None
        note = trial.user_attrs.get("surplus") or ""
        if trial.state.name == "PRUNED" and trial.intermediate_values:
            step = max(trial.intermediate_values)
            note = f"pruned at step {step} (val_{objective} {trial.intermediate_values[step]:.4f})"
        metrics = trial.user_attrs.get("val_metrics") or {}
        fidelity = trial.user_attrs.get("fidelity") or {}
        rows.append([trial.number, trial.state.name, value, trial.user_attrs.get("latency_ms"),
                     *[trial.params.get(k) for k in keys], *[metrics.get(m) for m in metric_names],
                     *[fidelity.get(f) for f in fidelity_names], trial.user_attrs.get("seconds"),
                     trial.user_attrs.get("worker"), note])
    return header, rows


def recommend(sweep: Any, study: Any):
    """The chosen trial: the best validation score (for a Pareto front, its best-scoring member)."""
    completed = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not completed:
        return None, []
    sign = -1.0 if sweep.space.direction == "maximize" else 1.0
    front = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    chosen = min(front, key=lambda t: (sign * t.values[0], t.values[1] if len(t.values) > 1 else 0.0, t.number))
    return chosen, front


def _recommended_yaml(sweep: Any, trial: Any) -> str:
    recipe = sweep.trial_recipe(dict(trial.params))
    params = ", ".join(f"{k}={v!r}" for k, v in trial.params.items())
    header = [
        f"# Recommended by `{sweep.adapter.tool} sweep` (study {sweep.study_name!r}), trial {trial.number}:",
        f"#   {params}",
        f"#   validation {sweep.space.objective} {trial.values[0]:.4f} on {trial.user_attrs.get('evaluated_on')}.",
        "# The sweep never saw the outer test patients. For the cross-validated test estimate of this recipe:",
        f"#   {sweep.adapter.tool} run recommended.yaml --out runs/recommended",
    ]
    return "\n".join(header) + "\n" + yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def _plots(sweep: Any, study: Any, chosen: Any, front: list) -> dict[str, bytes | None]:
    objective = sweep.space.objective
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE" and t.values]
    pngs: dict[str, bytes | None] = {}
    if not done:
        return pngs
    maximize = sweep.space.direction == "maximize"
    fig, ax = new_figure(6, 3.6)
    numbers = [t.number for t in done]
    values = [t.values[0] for t in done]
    best, running = [], None
    for v in values:
        running = v if running is None else (max(running, v) if maximize else min(running, v))
        best.append(running)
    ax.plot(numbers, values, "o", label="trial")
    ax.step(numbers, best, where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {objective}")
    ax.legend()
    pngs["history.png"] = figure_png(fig)

    latency = [(t.user_attrs.get("latency_ms"), t.values[0], t in front) for t in done]
    if any(_finite(x) for x, _, _ in latency):
        fig, ax = new_figure(6, 3.6)
        ax.scatter([x for x, _, f in latency if not f], [y for _, y, f in latency if not f], label="trial", c="grey")
        ax.scatter([x for x, _, f in latency if f], [y for _, y, f in latency if f], label="Pareto front" if
                   len(study.directions) > 1 else "best", c="C3")
        ax.set_xlabel("batch-1 latency (ms)")
        ax.set_ylabel(f"validation {objective}")
        ax.legend()
        pngs["pareto.png"] = figure_png(fig)

    agreement = [((t.user_attrs.get("fidelity") or {}).get("agreement"), t.values[0]) for t in done]
    if any(_finite(a) for a, _ in agreement):
        fig, ax = new_figure(6, 3.6)
        ax.scatter([a for a, _ in agreement], [v for _, v in agreement])
        ax.set_xlabel("agreement with the teacher (validation)")
        ax.set_ylabel(f"validation {objective}")
        pngs["fidelity.png"] = figure_png(fig)

    importances = _importances(study)
    if importances:
        fig, ax = new_figure(6, 0.6 + 0.4 * len(importances))
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names])
        ax.set_xlabel("importance (fANOVA)")
        pngs["importance.png"] = figure_png(fig)
    return pngs


def _importances(study: Any) -> dict[str, float]:
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2:
        return {}
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, target=lambda t: t.values[0]))
    except (RuntimeError, ValueError, ZeroDivisionError) as exc:  # e.g. a single distinct value per parameter
        log.info("parameter importances not computed: %s", exc)
        return {}


def _html(sweep: Any, study: Any, header: list[str], rows: list[list[Any]], chosen: Any, front: list,
          counts: dict[str, int]) -> str:
    from .search import _safe_url

    doc = HtmlDocument(f"{sweep.adapter.tool} sweep: {sweep.study_name}")
    objective = sweep.space.objective
    doc.paragraph(f"Study {sweep.study_name!r} in {_safe_url(sweep.storage_url)}; objective: validation {objective} "
                  f"({sweep.space.direction}); trials by state: "
                  + ", ".join(f"{k.lower()} {v}" for k, v in sorted(counts.items())) + ".")
    doc.paragraph(f"Every trial trains the student of folds {sweep.folds} against that fold's teacher(s), trained "
                  "once and shared, and is scored on the inner-validation "
                  f"{sweep.manifest.group_name}s only; the outer test {sweep.manifest.group_name}s are never seen, "
                  "so this table selects a recipe but does not estimate its performance. Run recommended.yaml for "
                  "the cross-validated test estimate.", "note")
    if sweep.latency:
        doc.table(["student", "latency (ms)", "within budget"],
                  [[k, v, k not in sweep.excluded] for k, v in sweep.latency.items()],
                  caption=f"Candidate students, batch 1, median after warm-up, budget "
                          f"{sweep.options.latency_budget_ms or 'none'} ms")
    if chosen is not None:
        doc.paragraph(f"Recommended: trial {chosen.number}, validation {objective} {chosen.values[0]:.4f}, "
                      + ", ".join(f"{k}={v!r}" for k, v in chosen.params.items()), "note")
    pngs = _plots(sweep, study, chosen, front)
    doc.heading("Optimisation history").figure(pngs.get("history.png"), "validation score of each completed trial")
    if pngs.get("pareto.png"):
        doc.heading("Validation score against latency").figure(pngs["pareto.png"],
                                                                 "Pareto front (multi-objective) or best trial")
    doc.heading("Parameter importances")
    if pngs.get("importance.png"):
        doc.figure(pngs["importance.png"], "fANOVA importance of each searched key for the validation score")
    else:
        doc.paragraph("Not computed: fewer than two completed trials, or no parameter varied.", "muted")
    doc.heading("Fidelity against accuracy")
    if pngs.get("fidelity.png"):
        doc.figure(pngs["fidelity.png"], "top-1 agreement with the teacher (faces: share within the failure "
                                         "threshold of the teacher) against the validation score")
    else:
        doc.paragraph("No completed trial with a fidelity figure.", "muted")
    doc.heading("Trials").table(header, rows, digits=4)
    return doc.render()


def write_outputs(sweep: Any, study: Any) -> dict[str, Any]:
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    header, rows = trial_rows(sweep, trials)
    out = sweep.out
    atomic_write_text(out / "trials.csv", csv_text(header, rows))
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    chosen, front = recommend(sweep, study)
    atomic_write_text(out / "sweep.html", _html(sweep, study, header, rows, chosen, front, counts))
    summary: dict[str, Any] = {"study": sweep.study_name, "trials": counts, "objective": sweep.space.objective,
                               "folder": str(out)}
    if chosen is not None:
        atomic_write_text(out / "recommended.yaml", _recommended_yaml(sweep, chosen))
        summary["recommended"] = {"trial": chosen.number, "value": chosen.values[0], "params": dict(chosen.params)}
        if len(study.directions) > 1:
            summary["pareto_front"] = [{"trial": t.number, "values": list(t.values)} for t in front]
    else:
        summary["recommended"] = None
    if sweep.excluded:
        summary["left_out_over_budget_ms"] = sweep.excluded
    return summary
