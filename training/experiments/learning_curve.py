"""How a chained model's dev WER falls with compute, and what a naive extrapolation asks for.

    python -m training.experiments.learning_curve --bundle models/pretrained/default \
        --target 0.15 --out docs/results/learning-curve

A bundle trained over several `init_from` runs carries each run in its provenance (steps,
processes, wall seconds, best dev WER). This command lays them end to end: cumulative core-hours
(wall seconds x processes, one thread each) and audio seen (an upper bound: steps x processes x
the recipe's max batch duration), against the best dev WER each run reached. It fits two
laws to those points, WER = a + b ln(core-hours) and ln WER = a + b ln(core-hours), and
solves each for the core-hours at which the target would be met. Both assume the curve keeps
its slope; a fixed-size model saturates, so the answer is a lower bound on the compute needed,
never a promise. Writes JSON, a markdown table and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from models.bundle import BUNDLE_JSON
from training.experiments import write_report


@dataclass(frozen=True)
class RunPoint:
    recipe: str
    steps: int
    processes: int
    wall_hours: float
    core_hours: float  # cumulative, through the end of this run
    audio_hours: float  # cumulative upper bound
    best_dev_wer: float


def chain(provenance: dict[str, Any]) -> list[RunPoint]:
    """The bundle's runs in training order, with cumulative compute."""
    runs = [*provenance.get("history", []), provenance]
    max_duration = float(provenance.get("config", {}).get("data", {}).get("max_duration_s", 0.0))
    points, core, audio = [], 0.0, 0.0
    for r in runs:
        missing = [k for k in ("steps", "train_seconds", "best_dev_wer") if r.get(k) is None]
        if missing:
            raise ValueError(f"run {r.get('recipe', '?')!r} in the bundle's provenance lacks {missing}")
        procs = int(r.get("world_size", 1))
        core += float(r["train_seconds"]) * procs / 3600
        audio += int(r["steps"]) * procs * max_duration / 3600
        points.append(RunPoint(r.get("recipe", "?"), int(r["steps"]), procs,
                               round(float(r["train_seconds"]) / 3600, 3), round(core, 3),
                               round(audio, 1), round(float(r["best_dev_wer"]), 4)))
    return points


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("the runs' compute does not vary: nothing to fit")
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return my - b * mx, b


def extrapolate(points: list[RunPoint], target: float) -> dict[str, Any]:
    if len(points) < 2:
        raise ValueError(f"a curve needs at least 2 runs in the chain, the bundle has {len(points)}")
    lx = [math.log(p.core_hours) for p in points]
    wer = [p.best_dev_wer for p in points]
    out: dict[str, Any] = {}
    for name, ys, solve in (
        ("log_linear", wer, lambda a, b: (target - a) / b),  # WER = a + b ln c
        ("power_law", [math.log(w) for w in wer], lambda a, b: (math.log(target) - a) / b),
    ):
        a, b = fit_line(lx, ys)
        hours = math.exp(solve(a, b)) if b < 0 else math.inf
        out[name] = {"a": round(a, 4), "b": round(b, 4), "core_hours_to_target": round(hours, 1),
                     "times_spent_so_far": round(hours / points[-1].core_hours, 1)}
    return out


def plot(points: list[RunPoint], fits: dict[str, Any], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [p.core_hours for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(xs, [100 * p.best_dev_wer for p in points], "o", color="k", label="best dev WER per run")
    hi = max(xs[-1] * 2, min(fits["power_law"]["core_hours_to_target"], xs[-1] * 100))
    grid = [xs[0] * (hi / xs[0]) ** (i / 60) for i in range(61)]
    lin, pw = fits["log_linear"], fits["power_law"]
    ax.plot(grid, [100 * (lin["a"] + lin["b"] * math.log(g)) for g in grid], "--", label="a + b ln c")
    ax.plot(grid, [100 * math.exp(pw["a"] + pw["b"] * math.log(g)) for g in grid], ":",
            label="exp(a) c^b")
    ax.axhline(100 * target, color="r", lw=0.8, label=f"target {100 * target:.0f} %")
    ax.set_xscale("log")
    ax.set_ylim(0, 100)
    ax.set_xlabel("cumulative core-hours (one thread per process)")
    ax.set_ylabel("dev WER %, greedy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def table(points: list[RunPoint], fits: dict[str, Any], target: float) -> str:
    rows = ["| run | steps | processes | wall h | cumulative core-h | audio seen h (<=) | best dev WER % |",
            "|---|---|---|---|---|---|---|"]
    rows += [f"| {p.recipe} | {p.steps} | {p.processes} | {p.wall_hours:.2f} | {p.core_hours:.2f} | "
             f"{p.audio_hours:.0f} | {100 * p.best_dev_wer:.1f} |" for p in points]
    rows += ["", f"| fit (over the runs above) | a | b | core-h to dev WER {100 * target:.0f} % "
             "| x compute so far |", "|---|---|---|---|---|"]
    rows += [f"| {name} | {f['a']} | {f['b']} | {f['core_hours_to_target']} | "
             f"{f['times_spent_so_far']} |" for name, f in fits.items()]
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", default="models/pretrained/default")
    ap.add_argument("--target", type=float, default=0.15, help="dev WER to extrapolate to")
    ap.add_argument("--out", type=Path, required=True, help="path stem: writes .json, .md, .png")
    args = ap.parse_args(argv)
    # the provenance only: models.bundle.load would also read the weights and parse the LM
    provenance = json.loads((Path(args.bundle) / BUNDLE_JSON).read_text()).get("provenance", {})
    points = chain(provenance)
    fits = extrapolate(points, args.target)
    md = table(points, fits, args.target)
    write_report(args.out, {"bundle": str(args.bundle), "target": args.target,
                            "runs": [asdict(p) for p in points], "fits": fits}, md)
    plot(points, fits, args.target, args.out.with_suffix(".png"))
    print(md)


if __name__ == "__main__":
    main()
