#!/usr/bin/env bash
# Installs what the local stack needs, once: a Python venv with moto (the AWS emulator),
# cargo-lambda and cfn-lint. Idempotent; a second run costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
STAMP=$VENV/.nbaops-setup-v2
if [ -f "$STAMP" ]; then exit 0; fi
command -v python3 >/dev/null || { echo "setup: python3 is required (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" || { echo "setup: python3 -m venv failed (apt-get install python3-venv)" >&2; exit 1; }
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  "moto[server]==5.2.5" "freezegun==1.5.*" "boto3" "cargo-lambda==1.9.2" "cfn-lint==1.*"
touch "$STAMP"
echo "setup: venv ready ($("$VENV/bin/moto_server" --version 2>/dev/null || echo moto), $("$VENV/bin/cargo-lambda" lambda --version 2>/dev/null || echo cargo-lambda))"
