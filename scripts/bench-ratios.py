#!/usr/bin/env python3
"""Reads the estimates criterion wrote for `cargo bench --bench layer` and
prints the figures and ratios of BENCHMARKS.md as Markdown.

    cargo bench --bench layer && python3 scripts/bench-ratios.py

The last table holds the figures against issue 12's targets. Criterion
times one case after another, so on a shared machine these ratios drift
with the machine; `cargo bench --bench layer_ratios` measures them
interleaved.
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def ns(group, name):
    path = ROOT / group / name / "new" / "estimates.json"
    try:
        estimates = json.loads(path.read_text())
    except FileNotFoundError:
        sys.exit(f"missing {path}: run `cargo bench --bench layer` first")
    return estimates["median"]["point_estimate"]


primitives = ["parse_valid", "parse_bad_checksum", "crc32", "sha256",
              "hash_and_compare", "hashmap_lookup", "sha256_plus_lookup"]
print("| primitive | median |")
print("|---|---|")
for name in primitives:
    print(f"| `{name}` | {ns('primitives', name):.1f} ns |")

bare = ns("layer", "bare")
yardstick = ns("primitives", "sha256_plus_lookup")
print()
print("| service | median | added to the bare service | added / (SHA-256 + lookup) |")
print("|---|---|---|---|")
for name in ["bare", "tower_http_bearer", "keyauth_valid_key", "keyauth_unknown_id",
             "keyauth_wrong_secret", "keyauth_bad_checksum", "keyauth_no_credential",
             "keyauth_cached_valid_key"]:
    total = ns("layer", name)
    added = total - bare
    print(f"| `{name}` | {total:.1f} ns | {added:.1f} ns | {added / yardstick:.2f} |")


for group in ["routed", "axum"]:
    base = ns(group, "bare")
    print()
    print(f"| service ({group}) | median | added to `{group}/bare` | added / (SHA-256 + lookup) |")
    print("|---|---|---|---|")
    for name in ["bare", "keyauth_valid_key", "keyauth_unknown_id", "keyauth_wrong_secret",
                 "keyauth_cached_valid_key"]:
        total = ns(group, name)
        print(f"| `{group}/{name}` | {total:.1f} ns | {total - base:.1f} ns | {(total - base) / yardstick:.2f} |")


def added(group, name):
    return ns(group, name) - ns(group, "bare")


print()
print("| target (issue 12) | added / (SHA-256 + lookup) | bound | verdict |")
print("|---|---|---|---|")
for group in ["layer", "routed"]:
    for name, bound in [("keyauth_valid_key", 3.0), ("keyauth_cached_valid_key", 3.5),
                        ("keyauth_unknown_id", 3.0)]:
        ratio = added(group, name) / yardstick
        verdict = "met" if ratio <= bound else "MISSED"
        print(f"| `{group}/{name}` | {ratio:.2f} | {bound} | {verdict} |")
    parity = ns(group, "keyauth_wrong_secret") / ns(group, "keyauth_unknown_id")
    verdict = "met" if abs(parity - 1.0) <= 0.03 else "MISSED"
    print(f"| `{group}`: wrong secret / unknown id | {parity:.3f} | 1.00 ± 0.03 | {verdict} |")
