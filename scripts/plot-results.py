#!/usr/bin/python3
"""Dice-vs-number-of-examples curves from `segicl eval` reports (metrics.json).

One panel per task plus the mean over tasks; one line per method, error bars = standard deviation
of the per-draw means (the spread over example draws). Methods with the same name in several
reports (e.g. "atlas") are drawn once, from the first report that has them; a run that recalled
from an exemplar memory gets its own line (scripts/report_labels.py), a single point when it ran
one x.

--metric dice_in_extent / mean_slice_dice draws the slice-restricted scores of 3D reports
(metrics.json "summary_in_extent" / "summary_slices"; see scripts/results-table.py).

usage: scripts/plot-results.py [--metric M] -o reports/chaos_dice_vs_k.png REPORT_DIR [REPORT_DIR ...]
needs: Debian's python3-matplotlib (hence /usr/bin/python3, not a pyenv python)
"""
import argparse
import json
import math
import os
import sys

import matplotlib
from report_labels import method_label

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# --metric -> the summary of metrics.json that holds it (written by `segicl eval`).
SUMMARIES = {"dice": "summary", "dice_in_extent": "summary_in_extent", "mean_slice_dice": "summary_slices"}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+", help="folders written by `segicl eval -o`")
    parser.add_argument("-o", "--out", required=True, help="PNG to write")
    parser.add_argument("--title", default="", help="figure title")
    parser.add_argument("--metric", default="dice", choices=sorted(SUMMARIES), help="per-case score averaged")
    args = parser.parse_args()

    curves = {}  # (task, method) -> {x: (mean, std)}
    for folder in args.reports:
        path = os.path.join(folder, "metrics.json")
        with open(path) as f:
            metrics = json.load(f)
        if SUMMARIES[args.metric] not in metrics:
            sys.exit(f"{path}: no {SUMMARIES[args.metric]} (a 2D dataset, or made before that score existed)")
        summary, options = metrics[SUMMARIES[args.metric]], metrics["options"]
        seen = set()
        for row in summary["per_task"]:
            key = (row["task"].split("/", 1)[-1], method_label(options, row["method"], row["num_examples"]))
            if key in curves and key not in seen:
                continue  # already drawn from an earlier report
            seen.add(key)
            curves.setdefault(key, {})[row["num_examples"]] = (row["dice_mean"], row["dice_std_over_draws"])
        for row in summary["mean_over_tasks"]:
            key = ("mean over tasks", method_label(options, row["method"], row["num_examples"]))
            if key in curves and key not in seen:
                continue
            seen.add(key)
            curves.setdefault(key, {})[row["num_examples"]] = (row["dice_mean"], row["dice_std_over_draws"])

    tasks = sorted({t for t, _ in curves if t != "mean over tasks"}) + ["mean over tasks"]
    methods = sorted({m for _, m in curves})
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    for i, task in enumerate(tasks):
        ax = axes[i // cols][i % cols]
        for method in methods:
            points = curves.get((task, method))
            if not points:
                continue
            xs = sorted(points)
            ax.errorbar(xs, [100 * points[x][0] for x in xs], yerr=[100 * points[x][1] for x in xs],
                        marker="o", capsize=3, label=method)
        ax.set_title(task)
        ax.set_xlabel("examples (x)")
        ax.set_ylabel("Dice %")
        ax.set_ylim(0, 100)
        ax.grid(alpha=0.3)
    for j in range(len(tasks), rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=8)
    if args.title:
        fig.suptitle(args.title)
    fig.tight_layout()
    tmp = args.out + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)  # never a half-written figure under the final name
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
