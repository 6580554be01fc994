#!/usr/bin/env bash
# Install the test tools once into ~/.cache/alluxiofs/tools (outside the repo,
# so `git clean` and fresh checkouts keep them):
#   bin/garage      Garage 2.5.0, a real S3 server for the tests and the demo
#                   (cargo install, ~10 min once on 2 cores; skipped when present)
#   lib/nodelay.so  LD_PRELOAD shim setting TCP_NODELAY on accepted sockets
#                   (built from scripts/nodelay.c; rebuilt when the source is newer)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${HOME}/.cache/alluxiofs/tools"
export PATH="${HOME}/.cargo/bin:${PATH}"
mkdir -p "${tools}/bin" "${tools}/lib"

if [[ -x "${tools}/bin/garage" ]]; then
    echo ">>> garage already installed: ${tools}/bin/garage"
else
    command -v cargo >/dev/null || { echo "error: cargo not found" >&2; exit 1; }
    echo ">>> installing garage 2.5.0 into ${tools} (about 10 minutes, once)"
    # Without CARGO_TARGET_DIR (the Makefile points it at target/), cargo
    # install builds in a temporary directory and removes it afterwards.
    env -u CARGO_TARGET_DIR \
        cargo install garage --version 2.5.0 --locked --no-default-features \
        --features bundled-libs,sqlite --root "${tools}"
fi

shim="${tools}/lib/nodelay.so"
if [[ ! -f "${shim}" || "${here}/nodelay.c" -nt "${shim}" ]]; then
    command -v cc >/dev/null || { echo "error: no C compiler (apt-get install build-essential)" >&2; exit 1; }
    echo ">>> building ${shim}"
    cc -shared -fPIC -O2 -Wall -Wextra -Werror -o "${shim}.tmp" "${here}/nodelay.c" -ldl
    mv "${shim}.tmp" "${shim}"
else
    echo ">>> nodelay shim up to date: ${shim}"
fi
