"""Row labels shared by scripts/results-table.py and scripts/plot-results.py.

A `segicl eval` run that recalled pairs from an exemplar memory (its options name one) scores the
model under the same method name as a run without it; the tables and figures tell them apart by
these labels, built from the run's recorded options only.
"""


def method_label(options, method, num_examples):
    """The name a report row of `method` at x = `num_examples` is shown under.

    Model rows that used the memory (x = 0, or x > 0 of a --memory-top-up run): "<method> + memory
    (K pairs)" ("K similar pairs" for --memory-choice similar; ", top-up" for x > 0), "... + N own
    planes" for a self-prompting run (--refine-examples N). Rows of post-processed masks (eval
    --post, method "<model>+<steps>") end in " + <steps>". Atlas and U-Net rows keep their names.
    """
    if method in ("atlas", "unet"):
        return method
    post = "+".join(options.get("postprocess") or [])
    if post and method.endswith("+" + post):
        method = method[: -len(post) - 1]
    else:
        post = ""
    topped = options.get("memory_top_up") and num_examples > 0
    label = method
    if options.get("memory") and (num_examples == 0 or topped):
        similar = " similar" if options.get("memory_choice") == "similar" else ""
        label += f" + memory ({options.get('memory_examples')}{similar} pairs" + (", top-up" if topped else "") + ")"
    if options.get("refine_examples"):
        label += f" + {options['refine_examples']} own planes"
    return label + (f" + {post}" if post else "")
