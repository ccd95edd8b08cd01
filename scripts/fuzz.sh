#!/usr/bin/env bash
# Coverage-guided fuzzing of the `request` target on a stable toolchain
# (cargo fuzz needs nightly; the same instrumentation works on stable when
# the flags apply to the target only). Usage: scripts/fuzz.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-180}
target=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$target" --target-dir target/stable-fuzz
work=$(mktemp -d)
cp corpus/request/* "$work/"
echo "fuzzing for ${seconds}s; new inputs go to $work, crashes to $PWD"
"target/stable-fuzz/$target/release/request" -max_total_time="$seconds" -max_len=4096 "$work"
