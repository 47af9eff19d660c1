#!/usr/bin/env bash
# The RDS CA bundle compiled into the PostgreSQL functions: every certificate valid for at least
# another 365 days (shared/certs/README.md). Run by `make infra-lint`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bundle=shared/certs/rds-ca-bundle.pem
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
awk -v d="$dir" '/BEGIN CERTIFICATE/{n++} n{print > (d "/" n ".pem")}' "$bundle"
total=0; bad=0
for f in "$dir"/*.pem; do
  total=$((total + 1))
  if ! openssl x509 -in "$f" -noout -checkend $((365 * 24 * 3600)) >/dev/null; then
    bad=$((bad + 1)); echo "FAIL $(openssl x509 -in "$f" -noout -subject -enddate | tr '\n' ' ')"
  fi
done
echo "ca-bundle: $total certificates, $bad expiring within a year"
[ "$total" -gt 0 ] && [ "$bad" -eq 0 ]
