#!/usr/bin/env python3
"""Prints the median of every benches/compare.rs scenario and processkit's ratio to tokio and std.

Reads criterion's target/criterion/<group>/<function>[/<param>]/new/estimates.json, so run it
after `cargo bench --bench compare -- ...` (see docs/performance.md).
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
        rows.setdefault(scenario, {})[impl] = med


def fmt(ns):
    for unit, div in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= div:
            return f"{ns / div:.3g} {unit}"
    return f"{ns:.3g} ns"


print("| scenario | processkit | tokio | std | pk / tokio | pk / std |")
print("|---|---|---|---|---|---|")
for scenario in sorted(rows):
    r = rows[scenario]
    pk, tk, sd = r.get("processkit"), r.get("tokio"), r.get("std")
    cells = [fmt(v) if v else "-" for v in (pk, tk, sd)]
    rt = f"{pk / tk:.2f}" if pk and tk else "-"
    rs = f"{pk / sd:.2f}" if pk and sd else "-"
    print(f"| {scenario} | " + " | ".join(cells) + f" | {rt} | {rs} |")
