#!/usr/bin/env bash
# Post-deploy verification (SPEC 5.1), run by every deploy job right after `sam deploy`:
#   1. every deployed function (its `live` alias) answers a "not for me" event without a FunctionError;
#   2. a plan: the read-only tasks always, the acting tasks only while the environment is in dry-run
#      (SSM /nbaops/<env>/guard/dry_run, else the stack's DryRun parameter) - and then nothing may
#      come back "acted".
# Any FunctionError or an "acted" outcome fails the deploy job.  Usage: post_deploy_verify.sh <env>
set -euo pipefail
ENV=${1:?usage: post_deploy_verify.sh <dev|test|prod>}
cd "$(dirname "$0")/../.."
FUNCTIONS="scale-on-alarm pg-health vacuum-trigger failover-notify cost-anomaly alert-router alert-ack offhours backup-guard posture-check"
out=$(mktemp -d)
fail=0

invoke() {  # invoke <function> <event file> <label>
  local fn=$1 event=$2 label=$3 resp="$out/$1-$3.json" err
  err=$(aws lambda invoke --function-name "nbaops-$ENV-$fn:live" --cli-binary-format raw-in-base64-out \
        --payload "fileb://$event" --query FunctionError --output text "$resp") || { echo "FAIL $fn ($label): invoke failed"; fail=1; return; }
  if [ "$err" != "None" ] && [ -n "$err" ]; then
    echo "FAIL $fn ($label): FunctionError $err: $(head -c 600 "$resp")"; fail=1; return
  fi
  if grep -q '"outcome":"acted"' "$resp"; then
    echo "FAIL $fn ($label): acted during verification: $(head -c 600 "$resp")"; fail=1; return
  fi
  echo "ok   $fn ($label)"
}

for fn in $FUNCTIONS; do
  invoke "$fn" events/not-for-me/empty-object.json not-for-me
done

# Read-only tasks: they observe and alert, never change infrastructure.
invoke pg-health events/schedule/pg-health.json plan
invoke backup-guard events/schedule/backup-rpo-check.json plan
invoke failover-notify events/schedule/failover-sweep.json plan

dry=$(aws ssm get-parameter --name "/nbaops/$ENV/guard/dry_run" --query Parameter.Value --output text 2>/dev/null || true)
if [ -z "$dry" ]; then
  dry=$(aws cloudformation describe-stacks --stack-name "nbaops-$ENV" \
        --query "Stacks[0].Parameters[?ParameterKey=='DryRun'].ParameterValue" --output text)
fi
case "$dry" in
  true|on|yes|1)
    invoke scale-on-alarm events/schedule/off-peak-scale-in.json dry-run-plan
    invoke offhours events/schedule/offhours-stop-tick.json dry-run-plan
    invoke cost-anomaly events/schedule/cost-daily-check.json dry-run-plan
    invoke posture-check events/schedule/posture-check.json dry-run-plan
    ;;
  *) echo "note: $ENV is not in dry-run: the acting tasks are not invoked by the verification" ;;
esac

[ "$fail" = 0 ] && echo "post-deploy verification of $ENV passed" || { echo "post-deploy verification of $ENV FAILED"; exit 1; }
