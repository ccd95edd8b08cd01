#!/usr/bin/env python3
"""Counts the instructions of one request through each service of the layer
bench, with callgrind: the stable measure on a shared machine, where wall
times move by 10-20 % between runs.

    cargo bench --bench layer --no-run
    python3 scripts/layer-instructions.py [BENCH_BINARY] [GROUP/CASE ...]

Without a binary, the newest `target/release/deps/layer-*` is used. For each
case it prints the inclusive instructions per call of the bench's `serve`
(build a request, call the service, drive the answer, drop it) and that
minus its group's `bare`: what the layer adds. valgrind hides SHA-NI, so SHA-256 runs
in software there (about 3 600 instructions that take ~65 ns natively); the
`primitives/sha256` row counts it alone.
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

CASES = ["layer/bare", "layer/keyauth_valid_key", "layer/keyauth_rate_limited_key",
         "layer/keyauth_cached_valid_key",
         "layer/keyauth_unknown_id", "layer/keyauth_wrong_secret", "layer/keyauth_bad_checksum",
         "layer/keyauth_no_credential", "layer/keyauth_insufficient_scope",
         "routed/bare", "routed/keyauth_valid_key", "routed/keyauth_cached_valid_key",
         "routed/keyauth_unknown_id", "routed/keyauth_wrong_secret",
         "axum/bare", "axum/keyauth_valid_key", "axum/keyauth_cached_valid_key",
         "axum/keyauth_unknown_id", "axum/keyauth_wrong_secret", "primitives/sha256"]

args = sys.argv[1:]
binary = None
if args and os.path.isfile(args[0]):
    binary = args.pop(0)
if binary is None:
    candidates = [path for path in glob.glob("target/release/deps/layer-*")
                  if os.access(path, os.X_OK) and not path.endswith(".d")]
    if not candidates:
        sys.exit("no bench binary: run `cargo bench --bench layer --no-run` first")
    binary = max(candidates, key=os.path.getmtime)
cases = args or CASES

# `  1,234 (0.5%)  >   file:function (56x) [binary]`; the file is `???`
# without line tables.
CALL = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+>\s+[^:\s]*:(.*) \(([\d,]+)x\)")


def per_call(out_file, function):
    """Inclusive instructions per call of `function` from its busiest
    caller (the benchmark loop, not the fixture's few checks)."""
    total, calls = 0, 0
    tree = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=calling", out_file],
                          capture_output=True, text=True, check=True).stdout
    for line in tree.splitlines():
        match = CALL.match(line)
        if match and match.group(2).strip() == function:
            count = int(match.group(3).replace(",", ""))
            if count > calls:
                total, calls = int(match.group(1).replace(",", "")), count
    # Fewer calls than a benchmark loop makes: the fixture's checks only.
    if calls < 1000:
        return None
    return total / calls


def measure(case):
    with tempfile.TemporaryDirectory() as scratch:
        out_file = os.path.join(scratch, "callgrind.out")
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}",
                        binary, "--bench", f"^{case}$", "--profile-time", "1"],
                       capture_output=True, check=True)
        if case == "primitives/sha256":
            return per_call(out_file, "tower_keyauth::hash::KeyHash::of")
        # `serve_routed` for the routed group, `serve` for the others.
        function = "layer::support::serve_routed" if case.startswith("routed/") else "layer::support::serve"
        return per_call(out_file, function)


results = {case: measure(case) for case in cases}
print(f"instructions per request ({os.path.basename(binary)})")
print()
print("| service | instructions | added to its bare service |")
print("|---|---|---|")
for case, count in results.items():
    if count is None:
        print(f"| `{case}` | (not found) | |")
        continue
    base = results.get(case.split("/")[0] + "/bare")
    added = "" if base is None or case.endswith("/bare") else f"{count - base:.0f}"
    print(f"| `{case}` | {count:.0f} | {added} |")
