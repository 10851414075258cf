#!/usr/bin/env bash
# Runs stow-exporter on its embedded defaults: configuration from ldif/,
# archive, index and task queue under data/, control API on
# 127.0.0.1:8080, the Storage SCP (AE DCM4CHEE1) on 127.0.0.1:11112, and the
# built-in STOW-RS receiver on 127.0.0.1:18080 storing what it receives
# under data/received/.
# Builds the release binary first (and installs Rust with rustup if needed).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  if [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    command -v curl >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq curl gcc g++ cmake; }
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  fi
  export PATH="$HOME/.cargo/bin:$PATH"
fi
# The JPEG-LS codec (CharLS) is C++ built with cmake.
if ! command -v cmake >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq cmake g++ >/dev/null
fi
cargo build --release --quiet --bin stow-exporter
exec target/release/stow-exporter serve --stowrsd data/received "$@"
