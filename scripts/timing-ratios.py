#!/usr/bin/env python3
"""Prints the figures and ratios of `cargo bench --bench timing` as Markdown.

    cargo bench --bench timing && python3 scripts/timing-ratios.py
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion") / "timing"


def estimate(name):
    path = ROOT / name / "new" / "estimates.json"
    if not path.exists():
        sys.exit(f"missing {path}: run `cargo bench --bench timing` first")
    return json.loads(path.read_text())


names = ["refuse_unknown_id", "refuse_wrong_secret_first_char", "refuse_wrong_secret_last_char",
         "compare_equal", "compare_first_byte_differs", "compare_last_byte_differs"]
print("| case | median | 95% interval of the mean |")
print("|---|---|---|")
medians = {}
for name in names:
    data = estimate(name)
    medians[name] = data["median"]["point_estimate"]
    low = data["mean"]["confidence_interval"]["lower_bound"]
    high = data["mean"]["confidence_interval"]["upper_bound"]
    print(f"| `{name}` | {medians[name]:.2f} ns | {low:.2f}–{high:.2f} ns |")

print()
print("| ratio | value |")
print("|---|---|")
for a, b in [("refuse_wrong_secret_first_char", "refuse_unknown_id"),
             ("refuse_wrong_secret_last_char", "refuse_wrong_secret_first_char"),
             ("compare_first_byte_differs", "compare_equal"),
             ("compare_last_byte_differs", "compare_first_byte_differs")]:
    print(f"| `{a}` / `{b}` | {medians[a] / medians[b]:.3f} |")
