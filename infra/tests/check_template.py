#!/usr/bin/env python3
"""What cfn-lint cannot know: the template deploys every function the way the project promises.

Run by `make test` (infra-lint) with the venv's Python (cfn-lint brings the YAML decoder that
understands !Ref, !Sub...). Prints one line per check and closes with 'template: N passed, M failed'.
"""
import pathlib
import sys
import tomllib

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
template, matches = decode(str(ROOT / "infra/template.yaml"))
if matches:
    print(f"template does not parse: {matches}")
    sys.exit(1)
resources = template["Resources"]
globals_fn = template.get("Globals", {}).get("Function", {})
results = []


def check(name, ok, detail=""):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + detail}")


def of_type(t):
    return {k: v for k, v in resources.items() if v.get("Type") == t}


functions = of_type("AWS::Serverless::Function")
by_code = {str(f["Properties"].get("CodeUri", "")).rstrip("/"): (k, f) for k, f in functions.items()}
crates = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists())

check("Globals: provided.al2023, arm64, bootstrap, JSON logs, X-Ray",
      globals_fn.get("Runtime") == "provided.al2023" and globals_fn.get("Architectures") == ["arm64"]
      and globals_fn.get("Handler") == "bootstrap" and globals_fn.get("LoggingConfig", {}).get("LogFormat") == "JSON"
      and globals_fn.get("Tracing") == "Active")

log_groups = of_type("AWS::Logs::LogGroup")
subscriptions = of_type("AWS::Logs::SubscriptionFilter")
for crate in crates:
    key, fn = by_code.get(f"../functions/{crate}", (None, None))
    check(f"{crate}: declared with CodeUri ../functions/{crate}", fn is not None)
    if fn is None:
        continue
    props = fn["Properties"]
    check(f"{crate}: BuildMethod rust-cargolambda", fn.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda")
    check(f"{crate}: canary deploy with rollback alarm",
          props.get("AutoPublishAlias") and "Canary" in str(props.get("DeploymentPreference", {}).get("Type", ""))
          and props.get("DeploymentPreference", {}).get("Alarms"))
    lg_ref = str(props.get("LoggingConfig", {}).get("LogGroup", ""))
    lg = next((v for k, v in log_groups.items() if k in lg_ref), None)
    check(f"{crate}: own log group kept 30 days", lg is not None and lg["Properties"].get("RetentionInDays") == 30, lg_ref)
    lg_name = next((k for k in log_groups if k in lg_ref), "?")
    check(f"{crate}: logs delivered to the S3 archive",
          any(lg_name in str(s["Properties"].get("LogGroupName")) for s in subscriptions.values()))
    events = props.get("Events", {})
    is_async = any(e.get("Type") in ("EventBridgeRule", "ScheduleV2", "SNS", "Schedule", "CloudWatchEvent") for e in events.values())
    if is_async:
        check(f"{crate}: asynchronous failures go to a destination",
              "OnFailure" in str(props.get("EventInvokeConfig", {}).get("DestinationConfig", {})))
    statements = [s for p in props.get("Policies", []) if isinstance(p, dict) for s in p.get("Statement", [])]
    check(f"{crate}: has its own policy statements", bool(statements))
    for s in statements:
        actions = s.get("Action")
        actions = actions if isinstance(actions, list) else [actions]
        check(f"{crate}: {s.get('Sid', '?')} names its actions", all(a and "*" != a and not str(a).endswith(":*") for a in actions))
        if s.get("Resource") == "*":
            read_only = all(str(a).split(":")[-1].startswith(("Describe", "List", "Get")) for a in actions)
            check(f"{crate}: {s.get('Sid', '?')} uses Resource * only for reads", read_only, str(actions))

alarms = of_type("AWS::CloudWatch::Alarm")
for key, fn in functions.items():
    code = str(fn["Properties"].get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
    check(f"{key}: has a crate functions/{code}", code in crates)
    for metric in ("Errors", "Throttles"):
        check(f"{key}: alarm on its own {metric}",
              any(a["Properties"].get("MetricName") == metric and key in str(a["Properties"].get("Dimensions")) for a in alarms.values()))


def alarm(metric, threshold, period, periods, op="GreaterThanThreshold"):
    def num(v):
        try:
            return float(v)
        except (TypeError, ValueError):
            return None  # a !Ref to a parameter
    return any(a["Properties"].get("MetricName") == metric and num(a["Properties"].get("Threshold", -1)) == threshold
               and a["Properties"].get("Period") == period and a["Properties"].get("EvaluationPeriods") == periods
               and a["Properties"].get("ComparisonOperator") == op for a in alarms.values())


check("alarm: Web/API CPU > 70 % for 5 minutes", alarm("CPUUtilization", 70, 300, 1))
check("alarm: Memcached memory > 75 % for 15 minutes", alarm("DatabaseMemoryUsagePercentage", 75, 300, 3))
params = template.get("Parameters", {})
check("alarm: RDS connections > 80 % (parameter, default 70 of ~87)", any(a["Properties"].get("MetricName") == "DatabaseConnections" for a in alarms.values()) and params.get("DbConnectionsThreshold", {}).get("Default") == 70)
check("alarm: RDS memory > 80 % (FreeableMemory low)", any(a["Properties"].get("MetricName") == "FreeableMemory" and a["Properties"].get("ComparisonOperator") == "LessThanThreshold" for a in alarms.values()))
check("alarm: RDS I/O wait > 10 %", alarm("IOWait", 10, 300, 1))
check("alarm: transaction IDs 500 M and 1 B", alarm("MaximumUsedTransactionIDs", 500000000, 300, 1) and alarm("MaximumUsedTransactionIDs", 1000000000, 300, 1))
check("alarm: replica lag > 30 s", alarm("ReplicaLag", 30, 60, 2))
rule = resources["ScaleOnAlarmFunction"]["Properties"]["Events"]["AlarmStateChange"]["Properties"]["Pattern"]["detail"]["alarmName"]
scaling = {str(a["Properties"]["AlarmName"]) for a in alarms.values() if a["Properties"].get("MetricName") in ("CPUUtilization", "FreeableMemory", "DatabaseConnections", "IOWait", "DatabaseMemoryUsagePercentage")}
check("scale-on-alarm receives exactly the scaling alarms", {str(x) for x in rule} == scaling, f"{rule} vs {scaling}")
ledger = next(iter(of_type("AWS::DynamoDB::Table").values()), {}).get("Properties", {})
check("ledger: TTL and point-in-time recovery",
      ledger.get("TimeToLiveSpecification", {}).get("Enabled") is True
      and ledger.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True)
buckets = of_type("AWS::S3::Bucket")
check("log archive bucket keeps a year", any("365" in str(b["Properties"].get("LifecycleConfiguration")) for b in buckets.values()))
check("no secret inlined in the template", "hooks.slack.com" not in (ROOT / "infra/template.yaml").read_text())

conf = tomllib.loads((ROOT / "samconfig.toml").read_text())
for env in ("dev", "test", "prod"):
    params = conf.get(env, {}).get("deploy", {}).get("parameters", {})
    check(f"samconfig: [{env}.deploy.parameters] with Env={env}", f"Env={env}" in params.get("parameter_overrides", ""))
check("samconfig: prod confirms its change set", conf["prod"]["deploy"]["parameters"].get("confirm_changeset") is True)

passed, failed = results.count(True), results.count(False)
print(f"template: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
