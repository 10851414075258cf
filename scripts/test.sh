#!/usr/bin/env bash
# Runs the whole test suite on a Debian machine, installing first what the
# tests need: a Rust toolchain (rustup, when cargo is missing), the Debian
# packages, and the Python packages whose bundled DICOM files are fixtures.
# Usage: scripts/test.sh [extra cargo test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
# Incremental state doubles the size of target/ and a test run builds once.
export CARGO_INCREMENTAL=0

log() { printf '==> %s\n' "$*" >&2; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# Debian packages: gcc/g++ build the bundled SQLite; python3 + pip for the
# fixtures; curl for the benchmark reference.
need_apt=()
for cmd in cc:gcc c++:g++ python3:python3 curl:curl pkg-config:pkg-config; do
  command -v "${cmd%%:*}" >/dev/null 2>&1 || need_apt+=("${cmd##*:}")
done
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
# A private slapd (scripts/slapd.sh) and its tools; openssl makes test certificates.
command -v slapd >/dev/null 2>&1 || [ -x /usr/sbin/slapd ] || need_apt+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need_apt+=(ldap-utils)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
# CharLS (the JPEG-LS codec) builds with cmake; dcmtk makes compressed test
# objects, is a reference decoder and the DICOM client (echoscu, storescu)
# of the Storage SCP tests; opj_decompress is the JPEG 2000
# reference of the decompression benchmark.
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
command -v dcmcjpeg >/dev/null 2>&1 || need_apt+=(dcmtk)
command -v opj_decompress >/dev/null 2>&1 || need_apt+=(libopenjp2-tools)
# Headless Chromium and its WebDriver drive the web page test (tests/ui.rs).
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
# strace shows that stowrsd fsyncs before it answers (tests/hardening_stowrsd.rs).
command -v strace >/dev/null 2>&1 || need_apt+=(strace)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  # No default slapd database: the tests run private instances.
  echo "slapd slapd/no_configuration boolean true" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    log "installing the Rust toolchain with rustup"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c rustfmt,clippy
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi

# Python test packages: pydicom ships the real-world DICOM files the tests
# import and export; its pixel plugins (pylibjpeg with libjpeg, openjpeg and
# rle; pyjpegls) are the reference decoders. Installed for this user;
# Debian's externally-managed Python needs --break-system-packages, a
# venv-less pip does not know it.
PY_PACKAGES=(pydicom numpy pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle pyjpegls)
if ! python3 -c 'import pydicom, numpy, pylibjpeg, libjpeg, openjpeg, rle, jpeg_ls' >/dev/null 2>&1; then
  log "installing Python test packages: ${PY_PACKAGES[*]}"
  python3 -m pip install -q --user "${PY_PACKAGES[@]}" 2>/dev/null \
    || python3 -m pip install -q --user --break-system-packages "${PY_PACKAGES[@]}"
fi
STOW_TEST_PYDICOM_FILES="$(python3 -c 'import pydicom, os; print(os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files"))')"
export STOW_TEST_PYDICOM_FILES

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
# tests/amqp_faults.rs runs private RabbitMQ nodes: the package must be there.
scripts/rabbitmq.sh install
# tests/orthanc.rs starts private Orthanc instances (scripts/orthanc.sh): the
# packages orthanc and orthanc-dicomweb must be there.
scripts/orthanc.sh install
# The private servers started below, stopped by their PIDs on exit.
RABBITMQ_DIR=""
POSTGRES_DIR=""
stop_servers() {
  if [ -n "$RABBITMQ_DIR" ]; then scripts/rabbitmq.sh stop "$RABBITMQ_DIR"; rm -rf "$RABBITMQ_DIR"; fi
  if [ -n "$POSTGRES_DIR" ]; then scripts/postgres.sh stop "$POSTGRES_DIR"; rm -rf "$POSTGRES_DIR"; fi
}
trap stop_servers EXIT
# tests/amqp.rs needs RabbitMQ on 127.0.0.1:5672: a private node when none answers there.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
  RABBITMQ_DIR="$(mktemp -d)"
  scripts/rabbitmq.sh start "$RABBITMQ_DIR" 5672
fi
# tests/task_store.rs and tests/pg_delivery.rs need PostgreSQL: at STOW_TEST_DATABASE_URL when that
# is set, else on 127.0.0.1:5432 (user postgres, no password), a private
# cluster (scripts/postgres.sh, installing the package postgresql) when
# none answers there. The tests are never skipped.
if [ -z "${STOW_TEST_DATABASE_URL:-}" ] && ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  POSTGRES_DIR="$(mktemp -d)"
  scripts/postgres.sh start "$POSTGRES_DIR" 5432
fi
log "cargo test"
cargo test --all-targets "$@"
