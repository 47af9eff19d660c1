#!/usr/bin/env bash
# Installs the template scanners, once, in their own venv `.venv-scan` (checkov pins versions that
# conflict with moto in `.venv`): checkov, parliament and aws-sam-translator at pinned versions.
# Idempotent: a stamp names the pinned set; a second run costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-scan
STAMP=$VENV/.nbaops-scan-v1
if [ -f "$STAMP" ]; then exit 0; fi
command -v python3 >/dev/null || { echo "setup-scan: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "setup-scan: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "checkov==3.3.30" "parliament==1.6.4" "aws-sam-translator==1.115.0"
echo "*" > "$VENV/.gitignore"  # the venv is never committed
touch "$STAMP"
echo "setup-scan: .venv-scan ready (checkov $("$VENV/bin/checkov" --version 2>/dev/null || echo '?'))"
