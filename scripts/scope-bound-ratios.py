#!/usr/bin/env python3
"""Prints the figures of `cargo bench --bench scope_bound` as Markdown, and
checks issue 10's target: for each store, refusing a forged token for a key
at the scope bound costs at most 1.10 x refusing one for a three-scope key.
Exits 1 when a ratio exceeds the limit (2 when figures are missing).

    cargo bench --bench scope_bound && python3 scripts/scope-bound-ratios.py
"""
import json
import pathlib
import sys

CRITERION = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")
ROOT = CRITERION / "scope_bound"
READS = CRITERION / "scope_bound_sqlite_read"
LIMIT = 1.10
STORES = ["memory", "sqlite"]
CASES = ["forged_three_scopes", "forged_at_bound", "valid_three_scopes", "valid_at_bound"]


def estimate(name, root=ROOT):
    path = root / name / "new" / "estimates.json"
    if not path.exists():
        print(f"missing {path}: run `cargo bench --bench scope_bound` first", file=sys.stderr)
        sys.exit(2)
    return json.loads(path.read_text())


def show(ns):
    return f"{ns / 1000:.2f} µs" if ns >= 10_000 else f"{ns:.1f} ns"


medians = {}
print("| case | " + " | ".join(f"`{store}` median (95 % CI of the mean)" for store in STORES) + " |")
print("|---|" + "---|" * len(STORES))
for case in CASES:
    cells = []
    for store in STORES:
        data = estimate(f"{case}_{store}")
        medians[case, store] = data["median"]["point_estimate"]
        low = data["mean"]["confidence_interval"]["lower_bound"]
        high = data["mean"]["confidence_interval"]["upper_bound"]
        cells.append(f"{show(medians[case, store])} ({show(low)}–{show(high)})")
    print(f"| `{case}` | " + " | ".join(cells) + " |")

print()
print("| store | forged at bound / forged three scopes | valid at bound / valid three scopes | target ≤ 1.10 |")
print("|---|---|---|---|")
missed = []
for store in STORES:
    forged = medians["forged_at_bound", store] / medians["forged_three_scopes", store]
    valid = medians["valid_at_bound", store] / medians["valid_three_scopes", store]
    verdict = "met" if forged <= LIMIT else "MISSED"
    if forged > LIMIT:
        missed.append(store)
    print(f"| `{store}` | **{forged:.3f}** | {valid:.3f} | {verdict} |")

# Where the SQLite time goes: the row read alone, in several ways (printed
# when the run included the `scope_bound_sqlite_read` group).
if READS.exists():
    print()
    print("| SQLite row read | three scopes | at the bound | at the bound / three scopes |")
    print("|---|---|---|---|")
    for read in ["store_select", "unsliced_scopes", "byte_sliced_scopes", "without_scopes",
                 "scopes_if_hash_matches", "hash_only"]:
        three = estimate(f"{read}_three_scopes", READS)["median"]["point_estimate"]
        bound = estimate(f"{read}_at_bound", READS)["median"]["point_estimate"]
        print(f"| `{read}` | {show(three)} | {show(bound)} | {bound / three:.3f} |")

if missed:
    print(f"\nforged at bound / forged three scopes exceeds {LIMIT} on: {', '.join(missed)}",
          file=sys.stderr)
    sys.exit(1)
