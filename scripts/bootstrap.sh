#!/usr/bin/env bash
# Install what gaincell needs on a fresh machine, idempotently: ngspice + libngspice0 (Debian packages),
# a virtual environment in .venv with the exact versions of requirements.lock, and this package (editable).
# Called by `make demo` and `make test`; safe and fast to re-run.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ngspice >/dev/null 2>&1 || missing+=(ngspice)
has_libngspice=false
for library in /usr/lib/*/libngspice.so.0 /usr/lib/libngspice.so.0 /usr/local/lib/libngspice.so*; do
    [ -e "$library" ] && has_libngspice=true
done
$has_libngspice || missing+=(libngspice0)
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
"$PYTHON" scripts/lock.py --check  # requirements.lock was made from pyproject.toml's current lists
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv

stamp=.venv/.gaincell-install
want=$(cat pyproject.toml requirements.lock | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    # Exactly the locked versions, nothing resolved here. The lock's torch==2.13.0 is the local CPU wheel on
    # these machines; a CUDA build of torch 2.13.0 installed into .venv first satisfies it and is kept.
    echo "bootstrap: installing the locked dependencies (requirements.lock) into .venv"
    .venv/bin/python -m pip install -q --no-deps -r requirements.lock
    echo "bootstrap: installing gaincell into .venv"
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
    echo "$want" > "$stamp"
fi
