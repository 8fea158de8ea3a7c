"""How far the golden runs move across CPU kernels and thread counts, against the recorded
reference (``regression.json``), how far a planted change moves them, and the tolerances
``tests/test_golden.py`` applies, derived from that: ``tolerances.json``, with the table in
``spread.md`` beside this file.

Each variant traces every case in a subprocess of its own (the kernels are picked when torch
loads); a case's tolerance for each kind of quantity is ``test_golden.SAFETY`` times the largest
deviation of any variant, rounded up to 1, 2 or 5 times a power of ten, at least
``test_golden.FLOORS``:

    python tests/golden/spread.py            # every variant, then the files (about 20 min on 2 cores)
    python tests/golden/spread.py --reuse    # the files again, from the traces already in --dir
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from test_golden import (FLOORS, PLANTS, REGRESSION, SAFETY, STUDENTS, TOLERANCES, compared, machine,  # noqa: E402
                         read_json, tolerance, write_json)

SMALL = 1e-3  # metric values nearer zero than this are judged by atol alone (a relative error means little)
ISA = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA")
# name -> (environment, torch threads): torch's own vector kernels (ATen) at each capability this
# CPU offers, and whole older machines (MKL's BLAS and oneDNN's convolutions held to the same ISA)
VARIANTS = {
    **{f"native, {n} thr": ({}, n) for n in (1, 2, 4)},
    **{f"aten avx2, {n} thr": ({"ATEN_CPU_CAPABILITY": "avx2"}, n) for n in (1, 2, 4)},
    **{f"aten default, {n} thr": ({"ATEN_CPU_CAPABILITY": "default"}, n) for n in (1, 2, 4)},
    "avx2 machine, 2 thr": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
                             "ONEDNN_MAX_CPU_ISA": "AVX2"}, 2),
    "sse4 machine, 3 thr": ({"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                             "ONEDNN_MAX_CPU_ISA": "SSE41"}, 3),
}


def trace(out: Path, env: dict, threads: int, extra: list[str] = ()) -> dict:
    """Trace the golden cases in a fresh interpreter with ``env`` (the ISA variables replaced)."""
    env = {**{k: v for k, v in os.environ.items() if k not in ISA}, **env}
    command = [sys.executable, str(HERE.parent / "test_golden.py"), "--trace", str(out), "--threads", str(threads),
               *extra]
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    traced = {**json.loads(out.read_text()), "seconds": time.perf_counter() - started}
    out.write_text(json.dumps(traced) + "\n")
    return traced


def deviations(case: str, actual: dict, recorded: dict, limits: dict | None = None) -> dict[str, dict]:
    """Per kind of quantity, the largest deviation of ``actual`` from ``recorded``: ``dev`` as the
    test measures it (step: a share of the term's largest |value| in the run; metric: relative,
    for values of at least SMALL; rate: absolute), ``abs_small`` (metric values below SMALL) and,
    given a case's ``limits``, ``share``: the largest deviation as a share of its tolerance."""
    out = {}
    for _, k, a, e in compared(case, actual, recorded):
        d = out.setdefault(k, {"dev": 0.0, "abs_small": 0.0, "share": 0.0})
        diff = (a - e).abs()
        if k == "step":
            d["dev"] = max(d["dev"], float(diff.max()) / (float(e.abs().max()) or 1.0))
        elif k == "rate" or abs(float(e)) >= SMALL:
            d["dev"] = max(d["dev"], float(diff if k == "rate" else diff / e.abs()))
        else:
            d["abs_small"] = max(d["abs_small"], float(diff))
        if limits is not None and float(diff.max()):
            tol = tolerance(k, e, limits)
            d["share"] = max(d["share"], float((diff / (tol["atol"] + tol["rtol"] * e.abs())).max()))
    return out


def merge(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """The largest of each entry over ``parts``."""
    out: dict[str, dict] = {}
    for part in parts:
        for k, d in part.items():
            into = out.setdefault(k, dict.fromkeys(d, 0.0))
            for key, value in d.items():
                into[key] = max(into[key], value)
    return out


def round_up(x: float) -> float:
    """``x`` rounded up to 1, 2 or 5 times a power of ten."""
    if x <= 0:
        return 0.0
    scale = 10 ** math.floor(math.log10(x))
    return next(m * scale for m in (1, 2, 5, 10) if m * scale >= x * (1 - 1e-9))


def derive(spread: dict[str, dict]) -> dict[str, dict]:
    """A case's tolerances from its spread: SAFETY times the largest deviation, rounded up, at least FLOORS."""
    measured = {"step": {"rtol": 0.0, "atol": spread["step"]["dev"]},
                "metric": {"rtol": spread["metric"]["dev"], "atol": spread["metric"]["abs_small"]},
                "rate": {"rtol": 0.0, "atol": spread["rate"]["dev"]}}
    return {k: {key: max(round_up(SAFETY * value), FLOORS[k][key]) for key, value in limits.items()}
            for k, limits in measured.items()}


def growth(actual: dict, recorded: dict) -> list[float]:
    """The deviation of the loss at each step of the run, as a share of its largest |value| (how
    fast a difference grows over training)."""
    a, e = ([v for terms in trace["steps"].values() for v in terms["loss"]] for trace in (actual, recorded))
    scale = max(map(abs, e)) or 1.0
    return [abs(x - y) / scale for x, y in zip(a, e)]


def first_failing_step(case: str, actual: dict, recorded: dict, limits: dict) -> str:
    """The term and step where the run first leaves its tolerance (for a planted change)."""
    failing = []
    for what, k, a, e in compared(case, actual, recorded):
        over = ((a - e).abs() > tolerance(k, e, limits)["atol"]).nonzero() if k == "step" else []
        if len(over):
            failing.append((int(over[0]) + 1, what.split(" at each step")[0]))
    return "none" if not failing else "{1}, step {0}".format(*min(failing))


def e(x: float) -> str:
    return "0" if x == 0 else f"{x:.1e}"


def table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def columns(d: dict[str, dict]) -> list[str]:
    return [e(d["step"]["dev"]), e(d["metric"]["dev"]), e(d["metric"]["abs_small"]), e(d["rate"]["dev"]),
            f"{max(x['share'] for x in d.values()):.2f}"]


KIND_HEAD = ["step", "metric rel", f"metric abs (<{SMALL:g})", "rate abs", "share"]


def report(traces: dict[str, dict], reference: dict, hashes: dict) -> tuple[str, dict]:
    """spread.md's text and tolerances.json's content."""
    cases = reference["cases"]
    variants = {name: t for name, t in traces.items() if name in VARIANTS}
    limits = {c: derive(merge([deviations(c, t["traces"][c], cases[c]) for t in variants.values()])) for c in cases}
    loosest = merge(list(limits.values()))
    per_variant = {name: {c: deviations(c, t["traces"][c], cases[c], limits[c]) for c in cases}
                   for name, t in variants.items()}
    here, minutes = machine(), sum(t.get("seconds", 0.0) for t in traces.values()) / 60
    lines = [
        "# Golden runs: the spread across kernels and thread counts",
        "",
        f"Written by `python tests/golden/spread.py` on {datetime.date.today()} in {minutes:.0f} min: {here['cpu']}, "
        f"{os.cpu_count()} cores, torch {here['torch']}, native kernels {here['capability']}. The reference is "
        f"`regression.json`, recorded on {reference['cpu']} ({reference['capability']}, {reference['threads']} "
        f"threads, torch {reference['torch']}). Each variant ran all {len(cases)} cases in a fresh process.",
        "",
        "A deviation is |value - reference|, measured as the test measures it: `step` (each loss term "
        "at each optimisation step) as a share of the term's largest |value| in the run; `metric` (final "
        f"metrics that vary smoothly: KL to the teacher, ECE, perplexity, counts) relative to |reference| where "
        f"that is at least {SMALL:g}, absolute below; `rate` (final metrics that count samples: accuracy, "
        "agreement, k-NN) absolute, in steps of whole samples (1/450 of the digits test set, 1/300 of the "
        f"tokens). Each case's tolerance (`tolerances.json`) is {SAFETY} x its largest deviation of each kind, "
        f"rounded up to 1, 2 or 5 x 10^k, at least `FLOORS` in `tests/test_golden.py`. `share` is the "
        "largest deviation as a share of the case's tolerance: below 1 passes.",
        "",
        "The variants: ATen's own vector kernels at each capability this CPU offers (`ATEN_CPU_CAPABILITY`), "
        "and whole older x86 machines, MKL's BLAS (`MKL_ENABLE_INSTRUCTIONS`) and oneDNN's convolutions "
        "(`ONEDNN_MAX_CPU_ISA`) held to the same instruction set, at 1 to 4 threads. Not measured: float64 "
        "runs (the losses compute in float32 on purpose, and a model initialised in float64 draws other "
        "weights, so such a run is another run rather than a reference for this one), and other "
        "architectures (aarch64 has neither MKL nor these oneDNN kernels).",
        "",
        "## By variant (largest over all cases)",
        "",
    ]
    rows = []
    for name, per_case in per_variant.items():
        t = variants[name]
        differ = sum(t["hashes"][c] != hashes.get(c) for c in cases)
        rows.append([name, t["capability"], str(t["threads"]), f"{differ}/{len(cases)}",
                     *columns(merge(list(per_case.values())))])
    lines += table(["variant", "ATen kernels", "threads", "hashes that differ", *KIND_HEAD], rows)
    lines += ["", "## By case (largest over all variants) and the tolerances derived", ""]
    rows = []
    for c in cases:
        differ = sum(t["hashes"][c] != hashes.get(c) for t in variants.values())
        rows.append([c, str(sum(len(t["loss"]) for t in cases[c]["steps"].values())), f"{differ}/{len(variants)}",
                     *columns(merge([v[c] for v in per_variant.values()])), e(limits[c]["step"]["atol"]),
                     e(limits[c]["metric"]["rtol"]), e(limits[c]["rate"]["atol"])])
    lines += table(["case", "steps", "hash differs in", *KIND_HEAD, "tol step", "tol metric rel", "tol rate"], rows)
    steps = [max(g) for g in zip(*[growth(t["traces"][c], cases[c]) + [0.0] * 60 for t in variants.values()
                                  for c in cases])]
    shown = [i for i in (1, 2, 3, 5, 10, 15, 20, 25, 30, 35, 40, 45) if i <= len(steps) and any(steps[i - 1:])]
    lines += ["", "## Growth over the steps (the loss; largest over all cases and variants)", "",
              *table(["step", *map(str, shown)], [["deviation", *(e(steps[i - 1]) for i in shown)]])]
    lines += ["", "## Planted changes: what the test must catch", "",
              "Each traced natively; `share` is its largest step deviation as a share of the case's tolerance, "
              "and of the loosest step tolerance of all cases (one tolerance for every case would be that).", ""]
    rows = []
    for plant, (c, _) in PLANTS.items():
        if f"plant:{plant}" in traces:
            planted = traces[f"plant:{plant}"]["traces"][c]
            d = deviations(c, planted, cases[c], limits[c])["step"]
            rows.append([plant, c, e(d["dev"]), f"{d['share']:.3g}", f"{d['dev'] / loosest['step']['atol']:.3g}",
                         first_failing_step(c, planted, cases[c], limits[c])])
    lines += table(["plant", "case", "step deviation", "share", "share of the loosest", "first failing"], rows)
    lines += ["", "## Tolerances", "", "The loosest of each kind (for a case not measured yet):", "",
              "```json", json.dumps(loosest), "```", ""]
    written = {"written": f"python tests/golden/spread.py, {datetime.date.today()}, {here['cpu']}",
               "safety": SAFETY, "floors": FLOORS, "loosest": loosest, "cases": limits}
    return "\n".join(lines), written


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/kdistill-golden-spread"), help="where traces go")
    parser.add_argument("--reuse", action="store_true", help="keep the traces already in --dir")
    args = parser.parse_args(argv)
    args.dir.mkdir(parents=True, exist_ok=True)
    reference = read_json(REGRESSION)
    traces = {}
    jobs = {name: (env, threads, []) for name, (env, threads) in VARIANTS.items()}
    jobs |= {f"plant:{plant}": ({}, reference["threads"], ["--plant", plant, "--only", case])
             for plant, (case, _) in PLANTS.items()}
    for name, (env, threads, extra) in jobs.items():
        out = args.dir / (name.replace(" ", "_").replace(",", "").replace(":", "-") + ".json")
        if not (args.reuse and out.is_file()):
            print(f"{name} ...", flush=True)
            trace(out, env, threads, extra)
        traces[name] = json.loads(out.read_text())
    text, tolerances = report(traces, reference, read_json(STUDENTS)["cases"])
    (HERE / "spread.md").write_text(text)
    write_json(TOLERANCES, tolerances, 2)  # a case's tolerances a line
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
