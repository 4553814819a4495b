#!/usr/bin/env bash
# Runs the whole Landworld test suite on a fresh Debian machine.
#
# - Installs the Debian packages the tests need when they are missing (Xvfb and Mesa's software
#   Vulkan for the game client's render test), using apt-get (as root, or through sudo).
# - Starts the local PostgreSQL cluster if it is installed but stopped.
# - Runs `cargo test --workspace` with a target dir outside the clone, so reruns are incremental.
#
# Under CI=true the PostgreSQL variants of the tests and the render test are mandatory.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/landworld-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if [[ "${CI:-}" == "true" || "${CI:-}" == "1" ]]; then
  export LANDWORLD_REQUIRE_POSTGRES=1
  export LANDWORLD_REQUIRE_DISPLAY=1
fi

as_root() {
  if [[ "$(id -u)" == "0" ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi
}

need=()
command -v xvfb-run >/dev/null || need+=(xvfb xauth)
dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
dpkg -s libvulkan1 >/dev/null 2>&1 || need+=(libvulkan1)
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"); then
    echo "warning: could not install ${need[*]}; the render test will say why it skips" >&2
  fi
fi

# PostgreSQL: start the local cluster if it is installed and not answering.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null; then
    version=$(ls /etc/postgresql 2>/dev/null | head -n1 || true)
    [[ -n "$version" ]] && as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  fi
fi

# --all-targets also builds the benchmarks and runs each once in test mode.
cargo test --workspace --all-targets "$@"
