#!/usr/bin/env bash
# Create .venv (if missing) and install pymesh, the control plane and the integrations into it,
# editable, with the dev dependencies. Fast on re-run: a stamp records a hash of the pyproject
# files (and of this script); pip runs again only when that hash changes.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
STAMP="$VENV/.pymesh-deps.stamp"
PYPROJECTS=(pyproject.toml controlplane/pyproject.toml
            integrations/django/pyproject.toml integrations/fastapi/pyproject.toml)
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"

want="$(cat "${PYPROJECTS[@]}" scripts/venv.sh | sha256sum | cut -d' ' -f1)"

# A venv copied from another machine can point at an interpreter that is not here.
if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
    echo "venv: $VENV does not run here; recreating it" >&2
    rm -rf "$VENV"
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "venv: creating $VENV with $PY" >&2
    if ! "$PY" -m venv "$VENV" 2>/dev/null; then
        # Debian ships venv/ensurepip in a separate package (python3.X-venv).
        rm -rf "$VENV"
        pkg="python$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')-venv"
        echo "venv: '$PY -m venv' failed; installing the Debian package $pkg" >&2
        sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        $sudo apt-get update
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "$pkg"
        "$PY" -m venv "$VENV"
    fi
fi

LOG="$VENV/pip-install.log"
echo "venv: installing pymesh and its dev dependencies into $VENV (log: $LOG)" >&2
if ! {
    "$VENV/bin/python" -m pip install --upgrade pip &&
    "$VENV/bin/python" -m pip install \
        -e '.[dev]' -e controlplane -e integrations/django -e integrations/fastapi
} >"$LOG" 2>&1; then
    cat "$LOG" >&2
    echo "venv: pip install failed (log above, kept in $LOG)" >&2
    exit 1
fi
echo "$want" >"$STAMP"
echo "venv: $VENV is up to date" >&2
