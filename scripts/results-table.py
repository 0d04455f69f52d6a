#!/usr/bin/python3
"""One Markdown table from several `segicl eval` reports of the same dataset.

Rows: method x number of examples (in the order the reports are given; a (method, x) row already
taken from an earlier report wins; x = -1 rows, the supervised U-Net, show its label and x "–");
columns: tasks (in --columns order, default sorted) and the mean over tasks; cells: Dice % mean ±
std over draws, summarised from the per-case rows exactly as `segicl eval` does (mean over cases
per draw, then mean and sample std over draws; the task mean is taken per draw first).

--same-cases-as REPORT restricts every report to the (case, draw) pairs that REPORT evaluated, so
a cheaper run (fewer cases or draws) is compared on identical queries and example draws (the draws
are a pure function of seed, task, x, draw and case). A footer line per report states its cases,
draws and run time, so every number is traceable to a run. Rows of a run that recalled from an
exemplar memory are labelled for it (scripts/report_labels.py).

--metric picks the per-case score: dice (whole volume, the default), dice_in_extent (within the
structure's slice range, the SSL-ALPNet protocol) or mean_slice_dice (mean 2D Dice over the planes
holding the structure, the paper's 2D setting); rows where it is null (no such plane) are left out.
Reports made before these scores existed have none: re-run them.

usage: scripts/results-table.py [--metric M] [--columns liver,spleen] [--same-cases-as DIR] REPORT_DIR [...]
"""
import argparse
import json
import os
import statistics

from report_labels import method_label


def load(folder):
    with open(os.path.join(folder, "metrics.json")) as f:
        return json.load(f)


METRICS = ("dice", "dice_in_extent", "mean_slice_dice")


def summarize(rows, metric="dice"):
    """{(method, x): {task or 'mean': (mean, std, cases)}} from per-case rows."""
    groups = {}
    for r in rows:
        if r.get(metric) is None:
            continue
        key = (r["method"], r["num_examples"])
        groups.setdefault(key, {}).setdefault(r["task"].split("/", 1)[-1], {}).setdefault(r["draw"], []).append(r[metric])
    out = {}
    for key, tasks in groups.items():
        cells, per_draw = {}, {}
        for task, draws in tasks.items():
            means = [statistics.mean(draws[d]) for d in sorted(draws)]
            std = statistics.stdev(means) if len(means) > 1 else 0.0
            cells[task] = (statistics.mean(means), std, len(next(iter(draws.values()))))
            for d in draws:
                per_draw.setdefault(d, []).append(statistics.mean(draws[d]))
        task_means = [statistics.mean(v) for _, v in sorted(per_draw.items())]
        cells["mean"] = (statistics.mean(task_means), statistics.stdev(task_means) if len(task_means) > 1 else 0.0, None)
        out[key] = cells
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--columns", default="", help="comma-separated task structures, in order")
    parser.add_argument("--same-cases-as", default="", help="restrict to this report's (case, draw) pairs")
    parser.add_argument("--metric", default="dice", choices=METRICS, help="per-case score to average")
    args = parser.parse_args()

    allowed = None
    if args.same_cases_as:
        allowed = {(r["case"], r["draw"]) for r in load(args.same_cases_as)["rows"]}

    order, cells, tasks, footers, labels = [], {}, set(), [], {}
    for folder in args.reports:
        metrics = load(folder)
        rows = [r for r in metrics["rows"] if allowed is None or (r["case"], r["draw"]) in allowed]
        rows = [dict(r, method=method_label(metrics["options"], r["method"], r["num_examples"])) for r in rows]
        if rows and all(args.metric not in r for r in rows):
            raise SystemExit(f"{folder}: its rows have no '{args.metric}' (made before that score existed): "
                             f"re-run it with `segicl eval`, or use --metric dice")
        summary = summarize(rows, args.metric)
        for key in sorted(summary, key=lambda k: (k[0], k[1])):
            if key in cells:
                continue
            order.append(key)
            cells[key] = summary[key]
            tasks.update(t for t in summary[key] if t != "mean")
        options = metrics["options"]
        if "unet" in options:
            labels.setdefault("unet", options["unet"]["label"])
        model = options.get("model", {}).get("path", "-")
        cases = len({r["case"] for r in rows})
        draws = len({r["draw"] for r in rows})
        memory = options.get("memory")
        if memory:
            similar = " similar" if options.get("memory_choice") == "similar" else ""
            model += f" + memory {memory} ({options.get('memory_examples')}{similar} pairs" + \
                (", topping up x" if options.get("memory_top_up") else "") + ")"
        footers.append(f"`{folder}`: model {model}, {cases} query cases, {draws} draws"
                       f"{' (restricted)' if allowed is not None else ''}, x = {options.get('num_examples')}, "
                       f"run {int(metrics.get('seconds', 0))} s")
        if "unet" in options:
            unet = options["unet"]
            footers.append(f"`{folder}`: {unet['label']}: {unet['steps']} steps x {unet['batch_size']} planes per "
                           f"fold, training " + ", ".join(f"{int(f['train_seconds'])} s" for f in unet["folds"])
                           + f" on {unet['threads']} thread(s)")

    columns = [c for c in args.columns.split(",") if c] or sorted(tasks)
    print("| method | x | " + " | ".join(columns) + " | mean |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for key in order:
        # x = -1: a method that takes no examples (the supervised U-Net, trained on the support pool).
        line = f"| {labels.get(key[0], key[0])} | – |" if key[1] < 0 else f"| {key[0]} | {key[1]} |"
        for column in columns + ["mean"]:
            value = cells[key].get(column)
            line += f" {100 * value[0]:.2f} ± {100 * value[1]:.2f} |" if value else " – |"
        print(line)
    print()
    for footer in footers:
        print(f"- {footer}")


if __name__ == "__main__":
    main()
