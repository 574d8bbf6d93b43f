#!/usr/bin/env bash
# A short fuzz run for CI: builds every target with libFuzzer's coverage instrumentation
# (the flags `cargo fuzz build --sanitizer none` passes, so no cargo-fuzz install is
# needed, and a dev build, which compiles in a fraction of a release build's time), then
# runs each target from its committed corpus for FUZZ_SECONDS seconds (default 5).
# A crash fails the script and leaves its input in fuzz/artifacts/<target>/. FUZZ_SKIP
# names targets not to run (space-separated), printed as skipped.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-5}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
target_dir="${CARGO_TARGET_DIR:-target}/ci"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo fuzz does).
host="$(rustc -vV | sed -n 's/^host: //p')"
cargo build --locked --bins --target "$host" --target-dir "$target_dir"
bins="$target_dir/$host/debug"
status=0
for bin in fuzz_targets/*.rs; do
  t="$(basename "$bin" .rs)"
  if [[ " ${FUZZ_SKIP:-} " == *" $t "* ]]; then
    echo "*** SKIPPED fuzz target $t (FUZZ_SKIP) ***"; continue
  fi
  mkdir -p "artifacts/$t"
  scratch="$(mktemp -d)"
  log="$(mktemp)"
  # New inputs go to a scratch directory: the committed corpus stays as it is.
  if "$bins/$t" -max_total_time="$seconds" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "$scratch" "corpus/$t" >"$log" 2>&1; then
    echo "$t: $(grep -E '^stat::number_of_executed_units' "$log") in ${seconds}s, no crash"
  else
    echo "fuzz target $t FAILED:"; grep -vE '^#[0-9]+' "$log" | tail -n 40
    status=1
  fi
  rm -rf "$scratch" "$log"
done
exit "$status"
