#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/*.rs) for SECONDS each (default 60) with cargo-fuzz
# (libFuzzer, AddressSanitizer, coverage-guided). Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# - Stable Rust: cargo-fuzz passes nightly-only -Z flags; RUSTC_BOOTSTRAP=1 lets the stable
#   compiler accept them (the sanitizer runtimes ship with the stable toolchain).
# - Installs cargo-fuzz when missing (`cargo install cargo-fuzz --locked`).
# - Seeds: fuzz/corpus/<target>/ (committed, small). Inputs the fuzzer discovers go to
#   $CARGO_TARGET_DIR/fuzz-corpus/<target>/ (kept between runs, not committed).
# - A crash, panic, leak or over-allocation stops that target and leaves the input in
#   fuzz/artifacts/<target>/; reproduce with `cargo fuzz run <target> <file>`. The script exits 1
#   if any target failed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-60}"
shift || true
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/landworld-fuzz-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

if (($#)); then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi

# Longest input per target: maps are bigger than frames and tokens.
max_len() { case "$1" in map_tmx) echo 16384 ;; *) echo 4096 ;; esac; }

failed=()
for t in "${targets[@]}"; do
  echo "=== $t: ${secs}s"
  scratch="$CARGO_TARGET_DIR/fuzz-corpus/$t"
  mkdir -p "$scratch" "fuzz/artifacts/$t"
  if ! cargo fuzz run "$t" "$scratch" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -max_len="$(max_len "$t")" -rss_limit_mb=2048 -malloc_limit_mb=512 \
      -timeout=10 -print_final_stats=1; then
    failed+=("$t")
  fi
done

if ((${#failed[@]})); then
  echo "FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "all targets ran ${secs}s without a failure: ${targets[*]}"
