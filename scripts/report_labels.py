"""Row labels shared by scripts/results-table.py and scripts/plot-results.py.

A `segicl eval` run that recalled pairs from an exemplar memory (its options name one) scores the
model under the same method name as a run without it; the tables and figures tell them apart by
these labels, built from the run's recorded options only.
"""


def method_label(options, method, num_examples):
    """The name a report row of `method` at x = `num_examples` is shown under.

    Model rows of a memory run: "<method> + memory (K pairs)" ("K similar pairs" for
    --memory-choice similar; ", top-up" for x > 0 rows of a --memory-top-up run), "... + N own
    planes" for a self-prompting run (--refine-examples N).
    Atlas and U-Net rows never use the memory and keep their names.
    """
    if method in ("atlas", "unet") or not options.get("memory"):
        return method
    topped = options.get("memory_top_up") and num_examples > 0
    similar = " similar" if options.get("memory_choice") == "similar" else ""
    label = method + f" + memory ({options.get('memory_examples')}{similar} pairs" + (", top-up" if topped else "") + ")"
    if options.get("refine_examples"):
        label += f" + {options['refine_examples']} own planes"
    return label
