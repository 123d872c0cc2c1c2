# Shared setup for scripts/*: create or reuse a virtualenv and install the project with extras.
# Usage (sourced): EXTRAS="dev" . scripts/_setup.sh
# Honours TOOLCHAIN_VENV (default: <repo>/.venv) and PYTHON (default: python3.11, else python3).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOOLCHAIN_VENV:-$ROOT/.venv}"
EXTRAS="${EXTRAS:-dev}"
if [ ! -x "$VENV/bin/python" ]; then
    PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    echo "setup: creating virtualenv $VENV with $PY" >&2
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
fi
# Reinstall only when pyproject.toml or the extras changed.
STAMP="$VENV/.toolchain-installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${EXTRAS//,/-}"
if [ ! -f "$STAMP" ]; then
    echo "setup: installing toolchain[$EXTRAS] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]" >&2
    rm -f "$VENV"/.toolchain-installed-*
    touch "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
PYTHON_BIN="$VENV/bin/python"
