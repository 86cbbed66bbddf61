#!/usr/bin/env python3
"""Prints, for every benches/compare.rs scenario, each implementation's time and processkit's
ratio to tokio (or, for the pipeline, to `sh -c 'a | b | c'`) and std.

Two statistics per function, from criterion's target/criterion/<group>/<function>[/<param>]/new/:
* median: criterion's median estimate (estimates.json);
* best: the fastest sample's time per iteration (sample.json). On a shared, noisy machine this
  is the least disturbed measurement, so its ratios are the more stable ones.
Run it after `cargo bench --bench compare -- ...` (see docs/performance.md).
"""
import json
import os
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
rows = {}
for dirpath, _dirs, files in os.walk(root):
    if "estimates.json" in files and dirpath.endswith(os.sep + "new"):
        rel = os.path.relpath(os.path.dirname(dirpath), root).split(os.sep)
        if rel[0] == "report" or "report" in rel:
            continue
        group, impl = rel[0], rel[1]
        scenario = group + ("/" + "/".join(rel[2:]) if len(rel) > 2 else "")
        with open(os.path.join(dirpath, "estimates.json")) as f:
            med = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(dirpath, "sample.json")) as f:
            smp = json.load(f)
        best = min(t / n for t, n in zip(smp["times"], smp["iters"]))
        rows.setdefault(scenario, {})[impl] = (med, best)


def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"


for k, name in ((0, "median"), (1, "best sample")):
    print(f"\n{name}:\n")
    print("| scenario | processkit | tokio (sh) | std | pk / tokio (sh) | pk / std |")
    print("|---|---|---|---|---|---|")
    for scenario in sorted(rows):
        r = {impl: v[k] for impl, v in rows[scenario].items()}
        pk, tk, sd = r.get("processkit"), r.get("tokio", r.get("sh")), r.get("std")
        cells = [fmt(v) if v else "-" for v in (pk, tk, sd)]
        rt = f"{pk / tk:.2f}" if pk and tk else "-"
        rs = f"{pk / sd:.2f}" if pk and sd else "-"
        print(f"| {scenario} | " + " | ".join(cells) + f" | {rt} | {rs} |")
