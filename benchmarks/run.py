"""Run the performance benchmarks, print a table and write ``results.json``.

    python benchmarks/run.py --out benchmarks/results.json            # `make bench`, ~3.5 minutes on 2 CPU cores
    python benchmarks/run.py --quick --out /tmp/results.json          # tiny settings, seconds (smoke test)
    python benchmarks/run.py --only p3 --device cuda                  # one figure, on a GPU

P1: distillation step throughput with real files vs in memory (demo sizes). P2: our OCT data path vs
KD-OCT's. P3: teacher vs student batch-1 latency, and ONNX Runtime vs eager PyTorch. P4: KD student epoch
with the teacher-output cache warm vs no-KD epoch. P5: int8 vs float32 ONNX Runtime latency of the OCT
student. Every figure is a median of several runs after warm-up; see docs/performance.md for what each
one means.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also when imported from elsewhere


from kdcore.atomic import atomic_write_json  # noqa: E402
from kdcore.device import resolve_device  # noqa: E402

from common import load_average, machine_facts  # noqa: E402
from p1_kd_step import P1Settings, run_p1  # noqa: E402
from p2_data_path import P2Settings, run_p2  # noqa: E402
from p3_latency import P3Settings, paper_pairs, quick_pairs, run_p3  # noqa: E402
from p4_cache import P4Settings, run_p4  # noqa: E402
from p4_cache import quick_pairs as p4_quick_pairs  # noqa: E402
from p5_int8 import P5Settings, run_p5  # noqa: E402

FIGURES = ("p1", "p2", "p3", "p4", "p5")


def settings_for(quick: bool, compile: bool = False) -> dict[str, Any]:
    if quick:
        return {"p1": P1Settings(patients=6, image_size=64, batch_size=8, warmup_rounds=1, rounds=2, knob_batches=1,
                                 compile=compile),
                "p2": P2Settings(patients=3, source_size=(384, 248), input_size=192, warmup=1, runs=2),
                "p3": P3Settings(pairs=quick_pairs(), teacher_runs=2, student_calls=2, onnx_pairs=("oct",)),
                "p4": P4Settings(pairs=p4_quick_pairs(), warmup_rounds=1, rounds=1),
                "p5": P5Settings(image_size=64, model="test_efficientnet", calibration_images=4, held_out_images=2,
                                 blocks=1, calls=2)}
    return {"p1": P1Settings(compile=compile), "p2": P2Settings(), "p3": P3Settings(pairs=paper_pairs()),
            "p4": P4Settings(), "p5": P5Settings()}


def _fmt(value: float, digits: int = 2) -> str:
    return f"{value:,.{digits}f}"


def table(results: dict[str, Any]) -> str:
    """The figures as a plain-text table (what `make bench` prints)."""
    rows = [("figure", "value", "goal", "met", "detail")]
    yes = lambda r: "yes" if r["met"] else "NO"  # noqa: E731
    if "p1" in results:
        p1 = results["p1"]
        c = p1["config"]
        rows.append(("P1 KD step: full / in-memory", _fmt(p1["ratio"]), p1["goal"], yes(p1),
                     f"{_fmt(p1['images_per_s_full'], 1)} vs {_fmt(p1['images_per_s_tensors'], 1)} img/s "
                     f"({c['variant']}: workers {c['workers']}, cache_decoded {c['cache_decoded']})"))
        for name, v in p1["variants"].items():
            rows.append((f"  P1 variant {name}", _fmt(v["ratio"]), "", "",
                         f"{_fmt(v['images_per_s'], 1)} vs {_fmt(v['images_per_s_tensors'], 1)} img/s"))
        for name, k in p1.get("compute_knobs", {}).items():
            rows.append((f"  P1 in-memory step {name}", "", "", "", f"{_fmt(k['images_per_s'], 1)} img/s"))
    if "p2" in results:
        p2 = results["p2"]
        rows.append(("P2 OCT data path: ours / KD-OCT", _fmt(p2["ratio"]) + "x", p2["goal"], yes(p2),
                     f"{_fmt(p2['ours_images_per_s'], 1)} vs {_fmt(p2['reference_images_per_s'], 1)} img/s "
                     f"({p2['images']} JPEGs {p2['source_size'][0]}x{p2['source_size'][1]} -> {p2['input_size']})"))
    if "p3" in results:
        p3 = results["p3"]
        for name in ("oct", "face"):
            if name not in p3:
                continue
            pair = p3[name]
            rows.append((f"P3 {name}: teacher / student latency", _fmt(pair["ratio"], 1) + "x", pair["goal"],
                         yes(pair), f"{pair['teacher']} {_fmt(pair['teacher_ms'], 1)} ms vs {pair['student']} "
                         f"{_fmt(pair['student_ms'], 1)} ms (eager, batch 1, {pair['size']} px)"))
            for runtime, r in pair["runtimes"].items():
                if runtime != "eager":
                    rows.append((f"  P3 {name} {runtime}", _fmt(r["ratio"], 1) + "x", "", "",
                                 f"{_fmt(r['teacher_ms'], 1)} ms vs {_fmt(r['student_ms'], 2)} ms"))
        if "onnx_vs_eager" in p3:
            o = p3["onnx_vs_eager"]
            rows.append(("P3 student: ONNX Runtime / eager", _fmt(o["ratio"]), o["goal"], yes(o),
                         f"{o['model']} {_fmt(o['onnx_ms'], 2)} ms vs {_fmt(o['eager_ms'], 2)} ms"))
    for name, p4 in results.get("p4", {}).items():
        if not isinstance(p4, dict) or "ratio" not in p4:
            continue
        c = p4["config"]
        rows.append((f"P4 {name}: KD epoch (cache warm) / no-KD epoch", _fmt(p4["ratio"]), p4["goal"], yes(p4),
                     f"{_fmt(p4['epoch_median_s']['kd_cached'], 2)} vs {_fmt(p4['epoch_median_s']['no_kd'], 2)} s; "
                     f"online KD {_fmt(p4['online_ratio'])}x; cache build {_fmt(p4['cache_build_s'], 1)} s for "
                     f"{c['cache_epochs']} epochs; same weights as online: {p4['cached_equals_online']} "
                     f"({c['teacher']} / {c['student']}, {c['image_size']} px)"))
    if "p5" in results:
        p5, c = results["p5"], results["p5"]["config"]
        rows.append(("P5 OCT student: int8 / fp32 ONNX Runtime latency", _fmt(p5["ratio"]), "reported", "",
                     f"{c['model']} {_fmt(p5['int8_ms'], 2)} vs {_fmt(p5['fp32_ms'], 2)} ms (batch 1, {c['image_size']} "
                     f"px, {c['threads']} threads, QDQ static U8S8)"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(4)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="benchmarks/results.json", help="where results.json goes")
    parser.add_argument("--quick", action="store_true", help="tiny settings and stand-in models (smoke test)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (P2 is CPU data work)")
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated subset of " + ",".join(FIGURES))
    parser.add_argument("--compile", action="store_true", help="also time P1's in-memory step under torch.compile")
    parser.add_argument("--workdir", default=None, help="folder for temporary images and ONNX files")
    args = parser.parse_args(argv)

    figures = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(figures) - set(FIGURES))
    if unknown:
        parser.error(f"--only: unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    device = resolve_device(args.device)
    settings = settings_for(args.quick, args.compile)
    started = time.time()
    command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])
    results: dict[str, Any] = {"machine": machine_facts(device), "quick": args.quick, "command": command}
    for figure in figures:
        figure_start = time.perf_counter()
        print(f"[bench] {figure} ...", flush=True)
        if figure == "p1":
            results["p1"] = run_p1(device, settings["p1"], args.workdir)
        elif figure == "p2":
            results["p2"] = run_p2(settings["p2"], args.workdir)
        elif figure == "p3":
            results["p3"] = run_p3(device, settings["p3"], args.workdir)
        elif figure == "p4":
            results["p4"] = run_p4(device, settings["p4"], args.workdir)
        else:
            results["p5"] = run_p5(settings["p5"], args.workdir)
        results[figure]["seconds"] = round(time.perf_counter() - figure_start, 1)
        results[figure]["load_average_after"] = load_average()
    results["machine"]["load_average_at_end"] = load_average()
    results["duration_s"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results)
    print(table(results))
    print(f"[bench] {out} written in {results['duration_s']:.0f} s "
          f"(load average {results['machine']['load_average_at_end']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
