# Shared by scripts/demo and scripts/test: create .venv and install the project into it.
# Usage: source scripts/_venv.sh; ensure_venv [extra]
ensure_venv() {
  local extra="${1:-}"
  local py="${PYTHON:-python3}"
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "error: Python >= 3.11 is required (found: $("$py" --version 2>&1))" >&2
    exit 2
  fi
  if [ ! -x .venv/bin/python ]; then
    echo "==> creating .venv" >&2
    "$py" -m venv .venv
  fi
  local spec="."
  [ -n "$extra" ] && spec=".[$extra]"
  # Re-install only when the project definition changed since the last install.
  local stamp=".venv/.installed-${extra:-runtime}"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "==> installing $spec into .venv" >&2
    .venv/bin/python -m pip install -qq --upgrade pip >&2
    .venv/bin/python -m pip install -qq -e "$spec" >&2
    touch "$stamp"
  fi
}
