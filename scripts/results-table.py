#!/usr/bin/python3
"""One Markdown table from several `segicl eval` reports of the same dataset.

Rows: method x number of examples (in the order the reports are given); columns: tasks (in
--columns order, default sorted) and the mean over tasks; cells: Dice % mean ± std over draws.
A footer line per report states its cases, draws and run time, so every number is traceable.

usage: scripts/results-table.py [--columns liver,spleen,...] REPORT_DIR [REPORT_DIR ...]
"""
import argparse
import json
import os


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reports", nargs="+")
    parser.add_argument("--columns", default="", help="comma-separated task structures, in order")
    args = parser.parse_args()

    rows, cells, tasks, footers = [], {}, set(), []
    for folder in args.reports:
        with open(os.path.join(folder, "metrics.json")) as f:
            metrics = json.load(f)
        summary, options = metrics["summary"], metrics["options"]
        earlier = set(rows)  # (method, x) rows already taken from an earlier report win
        for row in summary["per_task"]:
            task = row["task"].split("/")[-1]
            key = (row["method"], row["num_examples"])
            if key in earlier:
                continue
            if key not in rows:
                rows.append(key)
            tasks.add(task)
            cells.setdefault(key, {})[task] = (row["dice_mean"], row["dice_std_over_draws"], row["cases"])
        for row in summary["mean_over_tasks"]:
            key = (row["method"], row["num_examples"])
            if key in earlier:
                continue
            cells.setdefault(key, {})["mean"] = (row["dice_mean"], row["dice_std_over_draws"], None)
        model = options.get("model", {}).get("path", "-")
        footers.append(f"`{folder}`: model {model}, {options.get('queries')} query cases, "
                       f"{options.get('draws')} draws, x = {options.get('num_examples')}, "
                       f"{int(metrics.get('seconds', 0))} s")

    columns = [c for c in args.columns.split(",") if c] or sorted(tasks)
    print("| method | x | " + " | ".join(columns) + " | mean |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    for key in rows:
        line = f"| {key[0]} | {key[1]} |"
        for column in columns + ["mean"]:
            value = cells[key].get(column)
            line += f" {100 * value[0]:.2f} ± {100 * value[1]:.2f} |" if value else " – |"
        print(line)
    print()
    for footer in footers:
        print(f"- {footer}")


if __name__ == "__main__":
    main()
