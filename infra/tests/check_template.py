#!/usr/bin/env python3
"""What cfn-lint cannot know: the template deploys every function the way the project promises.

Run by `make test` (infra-lint) with the venv's Python (cfn-lint brings the YAML decoder that
understands !Ref, !Sub...). Prints one line per check and closes with 'template: N passed, M failed'.
`check_template.py [TEMPLATE]` checks another file (e.g. an older revision) against the same rules.
Every AWS fact a check relies on names the documentation page it comes from.
"""
import fnmatch
import json
import pathlib
import re
import sys
import tomllib

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "infra/template.yaml"
template, matches = decode(str(TEMPLATE))
if matches:
    print(f"template does not parse: {matches}")
    sys.exit(1)
resources = template["Resources"]
params = template.get("Parameters", {})
conditions = template.get("Conditions", {})
globals_fn = template.get("Globals", {}).get("Function", {})
results = []


def check(name, ok, detail=""):
    ok = bool(ok)
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")


def of_type(t):
    return {k: v for k, v in resources.items() if v.get("Type") == t}


def text(v):
    """An intrinsic as the string it stands for: !Sub 'x' -> 'x', !Ref X -> '${X}', !GetAtt X.Y -> '${X.Y}'."""
    if isinstance(v, dict) and len(v) == 1:
        (k, x), = v.items()
        if k == "Fn::Sub":
            return x if isinstance(x, str) else x[0]
        if k == "Ref":
            return "${%s}" % x
        if k == "Fn::GetAtt":
            return "${%s}" % (x if isinstance(x, str) else ".".join(x))
        if k == "Fn::Join" and isinstance(x, list) and len(x) == 2 and isinstance(x[1], list):
            return x[0].join(text(i) for i in x[1])
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True)


def as_list(v):
    return v if isinstance(v, list) else [v]


def statements(fn):
    return [s for p in fn["Properties"].get("Policies", []) if isinstance(p, dict) for s in p.get("Statement", [])]


def allows(fn, action=None):
    return [s for s in statements(fn) if s.get("Effect") == "Allow" and (action is None or action in as_list(s.get("Action")))]


def resources_of(stmts):
    return {text(r) for s in stmts for r in as_list(s.get("Resource"))}


def cond(s, op, key):
    return (s.get("Condition") or {}).get(op, {}).get(key)


functions = of_type("AWS::Serverless::Function")
alarms = of_type("AWS::CloudWatch::Alarm")
topics = of_type("AWS::SNS::Topic")
topic_policies = of_type("AWS::SNS::TopicPolicy")
crates = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists())
ARN = "arn:${AWS::Partition}"
SSM = ARN + ":ssm:${AWS::Region}:${AWS::AccountId}:parameter/nbaops/${Env}/"
ALERTS_TOPIC = {"Ref": "AlertsTopic"}

# ---------------------------------------------------------------- functions, crates, wiring
check("Globals: provided.al2023, arm64, bootstrap, JSON logs, X-Ray",
      globals_fn.get("Runtime") == "provided.al2023" and globals_fn.get("Architectures") == ["arm64"]
      and globals_fn.get("Handler") == "bootstrap" and globals_fn.get("LoggingConfig", {}).get("LogFormat") == "JSON"
      and globals_fn.get("Tracing") == "Active")

by_code = {}
for k, f in functions.items():
    by_code.setdefault(str(f["Properties"].get("CodeUri", "")).rstrip("/"), []).append(k)
log_groups = of_type("AWS::Logs::LogGroup")
subscriptions = of_type("AWS::Logs::SubscriptionFilter")
for crate in crates:
    keys = by_code.get(f"../functions/{crate}", [])
    if crate == "alert-router":
        # The one allowed split: delivery (SNS, sweep) and the public acknowledgement URL are two
        # functions of one binary, so a flood of link requests cannot take delivery's concurrency.
        urls = [k for k in keys if "FunctionUrlConfig" in functions[k]["Properties"]]
        check(f"{crate}: exactly two functions, delivery + acknowledgement URL", len(keys) == 2 and len(urls) == 1, keys)
    else:
        check(f"{crate}: exactly one function with CodeUri ../functions/{crate}", len(keys) == 1, keys)
for key, fn in functions.items():
    props = fn["Properties"]
    crate = str(props.get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
    check(f"{key}: has a crate functions/{crate}", crate in crates)
    check(f"{key}: BuildMethod rust-cargolambda", fn.get("Metadata", {}).get("BuildMethod") == "rust-cargolambda")
    check(f"{key}: canary deploy with rollback alarm",
          props.get("AutoPublishAlias") and "Canary" in str(props.get("DeploymentPreference", {}).get("Type", ""))
          and props.get("DeploymentPreference", {}).get("Alarms"))
    lg_ref = str(props.get("LoggingConfig", {}).get("LogGroup", ""))
    lg = next((v for k, v in log_groups.items() if k in lg_ref), None)
    check(f"{key}: own log group kept 30 days", lg is not None and lg["Properties"].get("RetentionInDays") == 30, lg_ref)
    lg_name = next((k for k in log_groups if k in lg_ref), "?")
    check(f"{key}: logs delivered to the S3 archive",
          any(lg_name in str(s["Properties"].get("LogGroupName")) for s in subscriptions.values()))
    events = props.get("Events", {})
    if any(e.get("Type") in ("EventBridgeRule", "ScheduleV2", "SNS", "Schedule", "CloudWatchEvent") for e in events.values()):
        check(f"{key}: asynchronous failures go to a destination",
              "OnFailure" in str(props.get("EventInvokeConfig", {}).get("DestinationConfig", {})))
    stmts = statements(fn)
    check(f"{key}: has its own policy statements", bool(stmts))
    for s in stmts:
        actions = as_list(s.get("Action"))
        check(f"{key}: {s.get('Sid', '?')} names its actions", all(a and "*" != a and not str(a).endswith(":*") for a in actions))
        if s.get("Effect") == "Allow" and s.get("Resource") == "*":
            read_only = all(str(a).split(":")[-1].startswith(("Describe", "List", "Get")) for a in actions)
            check(f"{key}: {s.get('Sid', '?')} uses Resource * only for reads", read_only, actions)
    for metric in ("Errors", "Throttles"):
        check(f"{key}: alarm on its own {metric}",
              any(a["Properties"].get("MetricName") == metric and key in str(a["Properties"].get("Dimensions")) for a in alarms.values()))

# ---------------------------------------------------------------- 1. alerts about nbaops arrive
# CloudWatch alarms cannot publish to a topic encrypted with the AWS managed key alias/aws/sns; a
# customer managed key whose policy lets the publishing service use it is required
# (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html#compatibility-with-aws-services).
keys = of_type("AWS::KMS::Key")
alarm_topics = {text(t) for a in alarms.values() for t in a["Properties"].get("AlarmActions", []) + a["Properties"].get("OKActions", [])}
published_by_service = {}  # topic -> service principals that publish to it
for tp in topic_policies.values():
    for s in tp["Properties"]["PolicyDocument"].get("Statement", []):
        for svc in as_list((s.get("Principal") or {}).get("Service", [])) if isinstance(s.get("Principal"), dict) else []:
            for t in tp["Properties"].get("Topics", []):
                published_by_service.setdefault(text(t), set()).add(svc)
for t in alarm_topics:
    published_by_service.setdefault(t, set()).add("cloudwatch.amazonaws.com")
service_principals = set().union(*published_by_service.values()) if published_by_service else set()
check("a customer managed KMS key with rotation exists", any(k["Properties"].get("EnableKeyRotation") is True for k in keys.values()))
key_name, key = next(iter(keys.items()), (None, {"Properties": {}}))
kp = key["Properties"].get("KeyPolicy", {}).get("Statement", [])
check("key policy: the account root administers the key",
      any(s.get("Effect") == "Allow" and "iam::${AWS::AccountId}:root" in text((s.get("Principal") or {}).get("AWS", "")) for s in kp))
key_services = {}
for s in kp:
    for svc in as_list((s.get("Principal") or {}).get("Service", [])):
        key_services[svc] = s
check("key policy: exactly the service principals that publish to the topics",
      set(key_services) == service_principals, f"{sorted(key_services)} vs {sorted(service_principals)}")
for svc, s in sorted(key_services.items()):
    check(f"key policy: {svc} gets only kms:Decrypt + kms:GenerateDataKey*",
          sorted(as_list(s.get("Action"))) == ["kms:Decrypt", "kms:GenerateDataKey*"], s.get("Action"))
    check(f"key policy: {svc} scoped with aws:SourceAccount = the stack account",
          cond(s, "StringEquals", "aws:SourceAccount") == {"Ref": "AWS::AccountId"})
for t in sorted(published_by_service):
    name = t.strip("${}")
    kms = topics.get(name, {}).get("Properties", {}).get("KmsMasterKeyId")
    check(f"topic {name}: encrypted with the customer managed key (AWS services publish to it)",
          key_name and text(kms) == "${%s.Arn}" % key_name, kms)
for tname, tp in topic_policies.items():
    for s in tp["Properties"]["PolicyDocument"].get("Statement", []):
        if isinstance(s.get("Principal"), dict) and "Service" in s["Principal"]:
            check(f"{tname}: {s.get('Sid', '?')} scoped with aws:SourceAccount",
                  cond(s, "StringEquals", "aws:SourceAccount") == {"Ref": "AWS::AccountId"})
for t in sorted(alarm_topics):
    name = t.strip("${}")
    check(f"topic {name}: its policy lets nbaops' alarms (cloudwatch.amazonaws.com, aws:SourceArn) publish",
          any(name in str(tp["Properties"].get("Topics")) and any(
              "cloudwatch.amazonaws.com" in as_list((s.get("Principal") or {}).get("Service", []))
              and ":alarm:nbaops-${Env}-" in text(cond(s, "ArnLike", "aws:SourceArn") or "")
              for s in tp["Properties"]["PolicyDocument"]["Statement"]) for tp in topic_policies.values()))
for rname, role in of_type("AWS::IAM::Role").items():
    for s in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
        if "Service" in (s.get("Principal") or {}):
            c = s.get("Condition") or {}
            scoped = cond(s, "StringEquals", "aws:SourceAccount") or cond(s, "StringEquals", "sts:ExternalId") \
                or cond(s, "ArnLike", "aws:SourceArn")
            check(f"{rname}: trust of {s['Principal']['Service']} scoped to this account (aws:SourceAccount/SourceArn or sts:ExternalId)", scoped, c)

# ---------------------------------------------------------------- 2. every nbaops alarm reaches the alerts topic
rule = resources["ScaleOnAlarmFunction"]["Properties"]["Events"]["AlarmStateChange"]["Properties"]["Pattern"]["detail"]["alarmName"]
scaling_names = {text(x) for x in rule}
# alert-router maps alarm names to severity with these default patterns (set by the Rust side).
SEVERITY_PATTERNS = ["nbaops-*-errors", "*-throttles", "nbaops-*-dlq*", "*failed-events*", "*transaction-ids*", "*replica-lag*"]
for key, a in sorted(alarms.items()):
    p = a["Properties"]
    name = text(p.get("AlarmName"))
    if name in scaling_names:
        continue  # scaling alarms reach scale-on-alarm through EventBridge
    check(f"{key}: AlarmActions and OKActions to the alerts topic",
          ALERTS_TOPIC in p.get("AlarmActions", []) and ALERTS_TOPIC in p.get("OKActions", []))
    check(f"{key}: name {name} maps to a severity", any(fnmatch.fnmatch(name, pat) for pat in SEVERITY_PATTERNS))
# A work queue (the source of an event source mapping, issue #20) holds work by design: its
# dead-letter queue is the one alarmed (checked with the mappings below).
work_queues = {text(m["Properties"].get("EventSourceArn")).strip("${}").split(".")[0]
               for m in of_type("AWS::Lambda::EventSourceMapping").values()}
for qname in of_type("AWS::SQS::Queue"):
    if qname in work_queues:
        continue
    check(f"{qname}: alarm on visible messages > 0",
          any(a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible" and qname in str(a["Properties"].get("Dimensions"))
              and float(a["Properties"].get("Threshold", -1)) == 0 and a["Properties"].get("ComparisonOperator") == "GreaterThanThreshold"
              for a in alarms.values()))

# ---------------------------------------------------------------- 3. alarms on metrics AWS publishes
published = json.loads((ROOT / "infra/tests/published_metrics.json").read_text())
for ns, entry in published.items():
    if not ns.startswith("_"):
        check(f"published_metrics: {ns} names its AWS source", str(entry.get("source", "")).startswith(("https://docs.aws.amazon.com/", "this template")))


def metrics_of(p):
    if "MetricName" in p:
        yield p.get("Namespace"), p.get("MetricName"), [d["Name"] for d in p.get("Dimensions", [])]
    for m in p.get("Metrics", []):
        if "MetricStat" in m:
            mm = m["MetricStat"]["Metric"]
            yield mm.get("Namespace"), mm.get("MetricName"), [d["Name"] for d in mm.get("Dimensions", [])]


for key, a in sorted(alarms.items()):
    found = list(metrics_of(a["Properties"]))
    check(f"{key}: watches at least one metric", found)
    for ns, metric, dims in found:
        entry = published.get(ns)
        ok = entry is not None and metric in entry["metrics"] and sorted(dims) in [sorted(d) for d in entry["dimensions"]]
        check(f"{key}: {ns} {metric} {dims} is published", ok,
              "not in infra/tests/published_metrics.json" + (f" ({entry.get('engine')} engine)" if entry and entry.get("engine") else ""))
cache = next((a["Properties"] for a in alarms.values() if text(a["Properties"].get("AlarmName")) == "nbaops-${Env}-cache-memory-high"), {})
node_ids = sorted(d["Value"] for m in cache.get("Metrics", []) if "MetricStat" in m
                  for d in m["MetricStat"]["Metric"]["Dimensions"] if d["Name"] == "CacheNodeId")
expr = next((text(m.get("Expression")) for m in cache.get("Metrics", []) if m.get("ReturnData") is not False and "Expression" in m), "")
check("cache-memory-high: fullest of nodes 0001..0004 over CacheNodeMemoryBytes, as a percent",
      node_ids == ["0001", "0002", "0003", "0004"] and expr.startswith("MAX(") and "${CacheNodeMemoryBytes}" in expr and "100" in expr, (node_ids, expr))
check("CacheNodeMemoryBytes defaults to cache.t3.micro's 512 MiB",
      # max_cache_memory of cache.t3.micro: https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/ParameterGroups.Engine.html
      params.get("CacheNodeMemoryBytes", {}).get("Default") == 512 * 1024 * 1024)
# scale-on-alarm's node-type table (scale.cache.node_memory, shared/src/config/scale.rs) holds the same
# max_cache_memory for cache.t3.micro as the template's parameter: the alarm and the confirmation agree.
# https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/ParameterGroups.Memcached.html#ParameterGroups.Memcached.NodeSpecific
scale_rs = (ROOT / "shared/src/config/scale.rs").read_text()
node_memory = next((line for line in scale_rs.splitlines() if '("scale.cache.node_memory"' in line), "")
check("CacheNodeMemoryBytes = scale.cache.node_memory's cache.t3.micro entry (512 MiB)",
      "cache.t3.micro=512MiB" in node_memory and params.get("CacheNodeMemoryBytes", {}).get("Default") == 512 * 1024 * 1024, node_memory)
alarm_map = text(resources["ScaleOnAlarmFunction"]["Properties"].get("Environment", {}).get("Variables", {}).get("NBAOPS_SCALE__ALARM_MAP", ""))
check("scale-on-alarm maps the cache alarm to its cluster (NBAOPS_SCALE__ALARM_MAP)",
      '"nbaops-${Env}-cache-memory-high":{"target":"cache:${CacheClusterId}","on_alarm":"out"}' in alarm_map, alarm_map)

# ---------------------------------------------------------------- 4. Enhanced Monitoring is optional
check("parameter EnhancedMonitoring true/false, default false",
      params.get("EnhancedMonitoring", {}).get("Default") == "false" and sorted(params.get("EnhancedMonitoring", {}).get("AllowedValues", [])) == ["false", "true"])
em_conditions = {k for k, v in conditions.items() if v == {"Fn::Equals": [{"Ref": "EnhancedMonitoring"}, "true"]}}
for key, r in resources.items():
    needs_em = (r.get("Type") == "AWS::Logs::MetricFilter" and r["Properties"].get("LogGroupName") == "RDSOSMetrics") \
        or (r.get("Type") == "AWS::CloudWatch::Alarm" and any(m[0] == "nbaops/RDS" for m in metrics_of(r["Properties"])))
    if needs_em:
        # RDSOSMetrics exists only once Enhanced Monitoring is on:
        # https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_Monitoring.OS.html
        check(f"{key}: exists only with EnhancedMonitoring=true", r.get("Condition") in em_conditions, r.get("Condition"))

# ---------------------------------------------------------------- 5. least privilege
# (a) SSM: GetParametersByPath is authorised against the requested path
# (https://docs.aws.amazon.com/systems-manager/latest/userguide/ps-retrieval-authorization.html), so each
# role names exactly the paths its config loader reads; secrets one by one with GetParameter; kms:Decrypt
# only on those secrets through the PARAMETER_ARN encryption context
# (https://docs.aws.amazon.com/systems-manager/latest/userguide/ps-restrict-decryption.html).
SSM_PLAN = {  # function: (config sections besides guard + audit, secret patterns under secrets/)
    # The fleet's functions (shared/src/aws_operations.rs FLEET_FUNCTIONS) read its external id.
    "ScaleOnAlarmFunction": (["scale"], ["fleet/external_id"]),
    "PgHealthFunction": (["pg"], ["pg/*/monitor", "fleet/external_id"]),
    "VacuumTriggerFunction": (["pg"], ["pg/*/maintenance", "fleet/external_id"]),
    "AlertRouterFunction": (["alerts"], ["alerts/*"]),
    # The acknowledgement URL runs alert-router's binary, whose init reads the channel secrets too.
    "AlertAckFunction": (["alerts"], ["alerts/link_signing_key", "alerts/previous_link_signing_key",
                                      "alerts/slack_webhook_url", "alerts/pagerduty_routing_key"]),
    "CostAnomalyFunction": (["cost"], []),
    "FailoverNotifyFunction": (["failover"], ["failover/*", "fleet/external_id"]),
    "BackupGuardFunction": (["backup", "pg"], ["backup/drill/*", "fleet/external_id"]),
    "OffhoursFunction": (["offhours"], ["fleet/external_id"]),
    # Not a fleet function (shared/src/aws_operations.rs FLEET_FUNCTIONS): no secret at all.
    "PostureCheckFunction": (["posture"], []),
}
check("every function has an SSM plan", set(SSM_PLAN) == set(functions), sorted(set(functions) ^ set(SSM_PLAN)))
# Single String parameters a function reads with GetParameter besides its secrets, authorised against
# the parameter's ARN (https://docs.aws.amazon.com/systems-manager/latest/userguide/sysman-paramstore-access.html):
# scale-on-alarm's game calendar, whose name is the default of scale.gamenight.calendar_parameter.
SSM_SINGLE = {"ScaleOnAlarmFunction": ["calendar/games"]}
SCALE_RS = (ROOT / "shared/src/config/scale.rs").read_text()
check("the game calendar the role grants is scale.gamenight.calendar_parameter's default",
      '("scale.gamenight.calendar_parameter", "/nbaops/{env}/calendar/games"' in SCALE_RS)
# The plan's sections are the ones the code reads (shared/src/config/mod.rs FUNCTION_SECTIONS): a
# section the code reads that the role cannot is an AccessDenied at init; one the role may read
# that the code never does is a dead grant.
CONFIG_MOD = (ROOT / "shared/src/config/mod.rs").read_text()
code_sections = {name: sorted(re.findall(r'"([^"]+)"', secs))
                 for name, secs in re.findall(r'\(\s*"([\w-]+)",\s*&\[([^\]]*)\]\s*\)',
                                              CONFIG_MOD.split("pub const FUNCTION_SECTIONS", 1)[1].split("];", 1)[0])}
check("FUNCTION_SECTIONS read from shared/src/config/mod.rs", len(code_sections) >= 8, code_sections)
for key, fn in functions.items():
    name = text(fn["Properties"].get("FunctionName", ""))
    binary = "alert-router" if key == "AlertAckFunction" else name.replace("nbaops-${Env}-", "")
    if key in SSM_PLAN and binary in code_sections:
        check(f"{key}: the SSM plan's sections are the ones its code reads ({code_sections[binary]})",
              sorted(SSM_PLAN[key][0]) == code_sections[binary], SSM_PLAN[key][0])
    elif key in SSM_PLAN:
        check(f"{key}: its binary '{binary}' is in FUNCTION_SECTIONS", False, sorted(code_sections))
# The roles grant GetParametersByPath on `parameter/nbaops/<env>/<section>` (no trailing slash), the
# resource AWS authorises it against is the requested path: the adapter must request exactly that.
SSM_ADAPTER = (ROOT / "shared/src/adapters/ssm.rs").read_text()
check("the SSM adapter requests paths without a trailing slash (the roles' resource form)",
      ".path(prefix.trim_end_matches('/'))" in SSM_ADAPTER)
for key, (sections, secrets) in SSM_PLAN.items():
    fn = functions.get(key)
    if fn is None:
        continue
    paths = {SSM + s for s in ["guard", "audit", "approval", "fleet"] + sections}
    secret_arns = {SSM + "secrets/" + s for s in secrets}
    single_arns = {SSM + p for p in SSM_SINGLE.get(key, [])}
    check(f"{key}: GetParametersByPath on exactly {sorted(p.rsplit('/', 1)[-1] for p in paths)}",
          resources_of(allows(fn, "ssm:GetParametersByPath")) == paths, resources_of(allows(fn, "ssm:GetParametersByPath")))
    # The guard re-reads its live switches by path under guard/ (covered above), never one by one:
    # GetParametersByPath is authorised against the requested path, not the parameters returned
    # (https://docs.aws.amazon.com/systems-manager/latest/userguide/ps-retrieval-authorization.html),
    # and the adapter requests `/nbaops/<env>/guard` (trailing slash trimmed, shared/src/adapters/ssm.rs).
    check(f"{key}: GetParameter on exactly its secrets" + (f" and {sorted(SSM_SINGLE[key])}" if key in SSM_SINGLE else ""),
          resources_of(allows(fn, "ssm:GetParameter")) == secret_arns | single_arns, resources_of(allows(fn, "ssm:GetParameter")))
    other_ssm = {a for s in allows(fn) for a in as_list(s["Action"]) if a.startswith("ssm:")} - {"ssm:GetParametersByPath", "ssm:GetParameter"}
    check(f"{key}: no other SSM action", not other_ssm, other_ssm)
    ssm_decrypt = [s for s in allows(fn, "kms:Decrypt") if cond(s, "StringLike", "kms:EncryptionContext:PARAMETER_ARN")]
    check(f"{key}: kms:Decrypt of SecureStrings " + ("only on its secrets (PARAMETER_ARN)" if secrets else "never"),
          ({text(x) for s in ssm_decrypt for x in as_list(cond(s, "StringLike", "kms:EncryptionContext:PARAMETER_ARN"))} == secret_arns)
          if secrets else not ssm_decrypt)
    for s in allows(fn, "kms:Decrypt"):
        check(f"{key}: {s.get('Sid')} kms:Decrypt is bound to a parameter or to SNS",
              cond(s, "StringLike", "kms:EncryptionContext:PARAMETER_ARN")
              or text(cond(s, "StringEquals", "kms:ViaService") or "") == "sns.${AWS::Region}.amazonaws.com")

# (b) mutating actions: only this environment's resources, never protected ones; offhours and
# cost-anomaly never production. Condition keys: aws:ResourceTag is supported by these actions
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html,
#  .../list_amazonrds.html, .../list_amazonelasticache.html).
MUTATING = {"autoscaling:SetDesiredCapacity", "autoscaling:UpdateAutoScalingGroup", "rds:ModifyDBInstance",
            "rds:StopDBInstance", "rds:StartDBInstance", "rds:DeleteDBInstance", "elasticache:ModifyCacheCluster"}
for key, fn in functions.items():
    mut = set()
    for s in allows(fn):
        m = MUTATING & set(as_list(s["Action"]))
        if not m:
            continue
        mut |= m
        env_tag = cond(s, "StringEquals", "aws:ResourceTag/nbaops:env") == {"Ref": "Env"}
        drill_tag = m == {"rds:DeleteDBInstance"} and cond(s, "StringEquals", "aws:ResourceTag/nbaops:drill") == "true"
        check(f"{key}: {s.get('Sid')} {sorted(m)} only on resources tagged nbaops:env=${{Env}}"
              + (" (drill instances: nbaops:drill=true)" if drill_tag else ""), env_tag or drill_tag, s.get("Condition"))
    if not mut:
        continue
    denies = [s for s in statements(fn) if s.get("Effect") == "Deny"]

    def denied(tag, value):
        return set().union(*[set(as_list(s["Action"])) for s in denies
                             if str(cond(s, "StringEquals", f"aws:ResourceTag/{tag}")) == value] or [set()])
    check(f"{key}: explicit Deny of {sorted(mut)} on nbaops:protect=true", mut <= denied("nbaops:protect", "true"), denied("nbaops:protect", "true"))
    if key in ("OffhoursFunction", "CostAnomalyFunction", "PostureCheckFunction"):
        check(f"{key}: explicit Deny of {sorted(mut)} on nbaops:env=prod (never production, by IAM)", mut <= denied("nbaops:env", "prod"))
# (b1) issue #22, backup-guard's full-system drill: it creates and force-deletes only its own
# smoke-test groups (nbaops-drill-*, nbaops:drill=true asked on create, carried on delete; both
# condition keys are supported by these actions:
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2autoscaling.html),
# never a protected one, and a group from a launch template needs ec2:RunInstances on the caller
# (https://docs.amazonaws.cn/en_us/autoscaling/ec2/userguide/ec2-auto-scaling-api-permissions.html).
_bg = functions.get("BackupGuardFunction", {"Properties": {}})
for _action, _key in (("autoscaling:CreateAutoScalingGroup", "aws:RequestTag/nbaops:drill"),
                      ("autoscaling:DeleteAutoScalingGroup", "autoscaling:ResourceTag/nbaops:drill")):
    _st = allows(_bg, _action)
    check(f"BackupGuardFunction: {_action} only on nbaops-drill-* groups with {_key}=true",
          bool(_st) and all(cond(x, "StringEquals", _key) == "true"
                            and all(r.endswith(":autoScalingGroupName/nbaops-drill-*") for r in resources_of([x]))
                            for x in _st), _st)
check("BackupGuardFunction: explicit Deny of autoscaling:DeleteAutoScalingGroup on nbaops:protect=true",
      any("autoscaling:DeleteAutoScalingGroup" in as_list(x.get("Action"))
          and str(cond(x, "StringEquals", "aws:ResourceTag/nbaops:protect")) == "true"
          for x in statements(_bg) if x.get("Effect") == "Deny"))
check("BackupGuardFunction: ec2:RunInstances beside autoscaling:CreateAutoScalingGroup (a launch template)",
      not allows(_bg, "autoscaling:CreateAutoScalingGroup") or bool(allows(_bg, "ec2:RunInstances")))
# (b2) alarm rewrites (issue #17): PutMetricAlarm and DescribeAlarms support the alarm resource type, so
# scale-on-alarm's role names this deployment's alarms only; DescribeAlarmsForMetric and
# GetMetricStatistics support no resource type ("*").
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html
scaler = functions.get("ScaleOnAlarmFunction", {"Properties": {}})
# PutMetricAlarm only on this deployment's alarms (DescribeAlarms: see the off-peak checks below).
for action in ("cloudwatch:PutMetricAlarm",):
    res = resources_of(allows(scaler, action))
    check(f"ScaleOnAlarmFunction: {action} only on alarm:nbaops-${{Env}}-*",
          res == {"arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:nbaops-${Env}-*"}, res)
for action in ("cloudwatch:DescribeAlarmsForMetric", "cloudwatch:GetMetricStatistics"):
    check(f"ScaleOnAlarmFunction: {action} on '*' (no resource type)", resources_of(allows(scaler, action)) == {"*"})
drift_inputs = [e["Properties"].get("Input", "") for e in scaler["Properties"].get("Events", {}).values() if e.get("Type") == "ScheduleV2"]
check("scale-on-alarm runs the daily 'alarm-drift' task", any('"task":"alarm-drift"' in i for i in drift_inputs), drift_inputs)
# (c) grants only for AWS services (https://docs.aws.amazon.com/kms/latest/developerguide/grant-authorization.html)
for key, fn in functions.items():
    for s in allows(fn, "kms:CreateGrant"):
        check(f"{key}: {s.get('Sid')} kms:CreateGrant only with kms:GrantIsForAWSResource", cond(s, "Bool", "kms:GrantIsForAWSResource") in (True, "true"))
# (d) actions no code calls (check_aws_operations.py proves the rest, both ways)
for key, gone in {"CostAnomalyFunction": ["autoscaling:SetDesiredCapacity", "rds:StartDBInstance"],
                  "OffhoursFunction": ["autoscaling:DescribeScalingActivities", "rds:ListTagsForResource"],
                  "BackupGuardFunction": ["rds:ListTagsForResource"]}.items():
    if key in functions:
        have = {a for s in allows(functions[key]) for a in as_list(s["Action"])}
        check(f"{key}: none of {gone}", not (have & set(gone)), have & set(gone))
router = functions.get("AlertRouterFunction", {"Properties": {}})
check("alert-router may publish to its escalation topics",
      any("escalation" in r for r in resources_of(allows(router, "sns:Publish"))), resources_of(allows(router, "sns:Publish")))
# (e) the public URL cannot starve delivery
url_fns = [k for k, f in functions.items() if "FunctionUrlConfig" in f["Properties"]]
check("alert delivery has its own reserved concurrency and no public URL",
      "ReservedConcurrentExecutions" in router["Properties"] and "FunctionUrlConfig" not in router["Properties"])
for k in url_fns:
    p = functions[k]["Properties"]
    check(f"{k}: the public URL has its own small reserved concurrency", "ReservedConcurrentExecutions" in p)
    acts = {a for s in allows(functions[k]) for a in as_list(s["Action"])}
    check(f"{k}: the URL's role can only read config/its signing key, use the ledger, audit and schedule approvals",
          acts <= {"ssm:GetParametersByPath", "ssm:GetParameter", "kms:Decrypt", "dynamodb:GetItem", "dynamodb:PutItem",
                   "dynamodb:DeleteItem", "dynamodb:Query", "sns:Publish", "scheduler:CreateSchedule", "iam:PassRole"}, acts)
    check(f"{k}: publishes only audit records (the actions topic)",
          resources_of(allows(functions[k], "sns:Publish")) <= {"${ActionsTopic}"}, resources_of(allows(functions[k], "sns:Publish")))

# (f) posture-check (issue #21): reads where AWS gives no resource-level permission on "*", the
# others on their resource type; its two writes (the safe fixes) on this account's and region's DB
# instances and snapshots only, and never on production, by an explicit Deny.
# Service Authorization Reference, action by action:
# - no resource type at all: ec2:Describe* (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html),
#   elasticloadbalancing:DescribeLoadBalancers (.../list_awselasticloadbalancingv2.html),
#   cloudwatch:GetMetricStatistics (.../list_amazoncloudwatch.html), tag:GetResources
#   (.../list_resourcegroupstaggingapi.html);
# - optional resource types only, and a listing call names none: rds:DescribeDBSnapshots,
#   rds:DescribeDBInstanceAutomatedBackups (.../list_amazonrds.html);
# - a required resource type: rds:DescribeDBInstances (db*), rds:DescribeDBParameters (pg*),
#   rds:DescribeDBSnapshotAttributes (snapshot*) (list_amazonrds.html), elasticache:DescribeCacheClusters
#   (cluster*), elasticache:DescribeReplicationGroups (replicationgroup*) (.../list_amazonelasticache.html);
# - rds:ModifyDBInstance (db*) and rds:AddTagsToResource (db, snapshot, ...): the db resource's
#   condition keys include aws:ResourceTag/${TagKey} and rds:db-tag/${TagKey}, the snapshot's
#   aws:ResourceTag/${TagKey} and rds:snapshot-tag/${TagKey} (list_amazonrds.html), so a Deny on
#   aws:ResourceTag/nbaops:env = prod applies to both actions on both resources.
posture = functions.get("PostureCheckFunction")
check("posture-check: a function PostureCheckFunction", posture is not None)
if posture is not None:
    RDS = ARN + ":rds:${AWS::Region}:${AWS::AccountId}:"
    CACHE = ARN + ":elasticache:${AWS::Region}:${AWS::AccountId}:"
    ON_STAR = {"ec2:DescribeSecurityGroups", "ec2:DescribeVolumes", "ec2:DescribeAddresses", "ec2:DescribeInstances",
               "elasticloadbalancing:DescribeLoadBalancers", "cloudwatch:GetMetricStatistics", "tag:GetResources",
               "rds:DescribeDBSnapshots", "rds:DescribeDBInstanceAutomatedBackups"}
    SCOPED = {"rds:DescribeDBInstances": {RDS + "db:*"}, "rds:DescribeDBParameters": {RDS + "pg:*"},
              "rds:DescribeDBSnapshotAttributes": {RDS + "snapshot:*"},
              "elasticache:DescribeCacheClusters": {CACHE + "cluster:*", CACHE + "replicationgroup:*"},
              "elasticache:DescribeReplicationGroups": {CACHE + "cluster:*", CACHE + "replicationgroup:*"}}
    on_star = {a for s in allows(posture) if "*" in as_list(s.get("Resource")) for a in as_list(s["Action"])}
    check("PostureCheckFunction: on '*' exactly the reads AWS authorises on no resource type", on_star == ON_STAR,
          sorted(on_star ^ ON_STAR))
    for action, want in SCOPED.items():
        check(f"PostureCheckFunction: {action} on this account's and region's resources of its type",
              resources_of(allows(posture, action)) == want, resources_of(allows(posture, action)))
    FIXES = ("rds:ModifyDBInstance", "rds:AddTagsToResource")
    check("PostureCheckFunction: rds:ModifyDBInstance only on this account's and region's DB instances",
          resources_of(allows(posture, "rds:ModifyDBInstance")) == {RDS + "db:*"}, resources_of(allows(posture, "rds:ModifyDBInstance")))
    check("PostureCheckFunction: rds:AddTagsToResource only on this account's and region's DB instances and snapshots",
          resources_of(allows(posture, "rds:AddTagsToResource")) == {RDS + "db:*", RDS + "snapshot:*"},
          resources_of(allows(posture, "rds:AddTagsToResource")))
    for s in allows(posture):
        if set(FIXES) & set(as_list(s["Action"])) and any(":db:" in r for r in resources_of([s])):
            check(f"PostureCheckFunction: {s.get('Sid')} fixes a database only when tagged nbaops:env=${{Env}}",
                  cond(s, "StringEquals", "aws:ResourceTag/nbaops:env") == {"Ref": "Env"}, s.get("Condition"))
    posture_denies = [s for s in statements(posture) if s.get("Effect") == "Deny"]

    def denies_on(tag, value):
        return [s for s in posture_denies if set(FIXES) <= set(as_list(s.get("Action"))) and as_list(s.get("Resource")) == ["*"]
                and cond(s, "StringEquals", f"aws:ResourceTag/{tag}") == value
                and list((s.get("Condition") or {})) == ["StringEquals"] and list(s["Condition"]["StringEquals"]) == [f"aws:ResourceTag/{tag}"]]
    check("PostureCheckFunction: explicit Deny of both fixes on every resource tagged nbaops:env=prod (aws:ResourceTag, nothing else)",
          denies_on("nbaops:env", "prod"), posture_denies)
    check("PostureCheckFunction: explicit Deny of both fixes on nbaops:protect=true", denies_on("nbaops:protect", "true"), posture_denies)
    check("PostureCheckFunction: explicit Deny of both fixes on a resource tagged for another environment",
          any(set(FIXES) <= set(as_list(s.get("Action"))) and cond(s, "StringNotEquals", "aws:ResourceTag/nbaops:env") == {"Ref": "Env"}
              and str(cond(s, "Null", "aws:ResourceTag/nbaops:env")).lower() == "false" for s in posture_denies), posture_denies)
    writes = {a for s in allows(posture) for a in as_list(s["Action"])
              if not a.split(":")[1].startswith(("Describe", "List", "Get", "Query"))}
    check("PostureCheckFunction: its only AWS writes are the two fixes, the ledger and its publishing",
          writes <= set(FIXES) | {"dynamodb:PutItem", "dynamodb:DeleteItem", "sns:Publish", "kms:GenerateDataKey", "kms:Decrypt"}, writes)
    # The code behind the IAM: the config refuses production in posture.fix.envs, the rules fix
    # only where the config allows, and the handler's fixes are those two calls.
    posture_rs = (ROOT / "shared/src/config/posture.rs").read_text()
    check("posture.fix.envs refuses prod (shared/src/config/posture.rs)",
          "if env == Env::Prod {" in posture_rs and "e != Env::Prod && self.fix_envs.contains(&e)" in posture_rs)
    p_inputs = [e["Properties"] for e in posture["Properties"].get("Events", {}).values() if e.get("Type") == "ScheduleV2"]
    check("PostureCheckFunction: one daily schedule, 06:00 UTC by default, task posture-check",
          len(p_inputs) == 1 and p_inputs[0].get("ScheduleExpression") == {"Ref": "PostureCheckCron"}
          and params.get("PostureCheckCron", {}).get("Default") == "cron(0 6 * * ? *)"
          and p_inputs[0].get("ScheduleExpressionTimezone") == "UTC"
          and json.loads(p_inputs[0].get("Input", "{}")).get("nbaops", {}).get("task") == "posture-check", p_inputs)
    fixture = json.loads((ROOT / "events/schedule/posture-check.json").read_text()) if (ROOT / "events/schedule/posture-check.json").exists() else {}
    check("events/schedule/posture-check.json is the schedule's input (task posture-check, an execution id)",
          fixture.get("nbaops", {}).get("task") == "posture-check" and fixture["nbaops"].get("id")
          and set(fixture["nbaops"]) == set(json.loads(p_inputs[0]["Input"])["nbaops"]) if p_inputs else False, fixture)

# ---------------------------------------------------------------- 6. sustained alarms keep stepping
# scale-on-alarm schedules its own re-checks (functions/scale-on-alarm/src/recheck.rs) as one-time
# EventBridge Scheduler schedules in its own group, invoking its live alias through an execution role.
sched_groups = of_type("AWS::Scheduler::ScheduleGroup")
FOLLOWUP_GROUP = "nbaops-${Env}-scale-followups"
check("a schedule group nbaops-${Env}-scale-followups for scale-on-alarm's re-checks",
      any(text(g["Properties"].get("Name")) == FOLLOWUP_GROUP for g in sched_groups.values()), sched_groups)
group_key = next((k for k, g in sched_groups.items() if text(g["Properties"].get("Name")) == FOLLOWUP_GROUP), None)
soa = functions.get("ScaleOnAlarmFunction", {"Properties": {}})
soa_name = text(soa["Properties"].get("FunctionName"))
FN_ARN = ARN + ":lambda:${AWS::Region}:${AWS::AccountId}:function:" + soa_name
check("scale-on-alarm has the explicit FunctionName nbaops-${Env}-scale-on-alarm and a live alias (the re-checks' target)",
      soa_name == "nbaops-${Env}-scale-on-alarm" and soa["Properties"].get("AutoPublishAlias") == "live", soa_name)
# The execution role: trusted by scheduler.amazonaws.com, scoped with aws:SourceAccount, allowed only
# to invoke the target (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html#setting-up-execution-role).
role = of_type("AWS::IAM::Role").get("ScaleFollowUpRole", {"Properties": {"AssumeRolePolicyDocument": {"Statement": []}}})
trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
check("ScaleFollowUpRole: assumed by scheduler.amazonaws.com only, aws:SourceAccount = this account",
      len(trust) == 1 and as_list(trust[0].get("Principal", {}).get("Service")) == ["scheduler.amazonaws.com"]
      and trust[0].get("Action") == "sts:AssumeRole" and cond(trust[0], "StringEquals", "aws:SourceAccount") == {"Ref": "AWS::AccountId"}, trust)
role_stmts = [st for p in role["Properties"].get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
check("ScaleFollowUpRole: only lambda:InvokeFunction on scale-on-alarm and its live alias",
      [as_list(st.get("Action")) for st in role_stmts] == [["lambda:InvokeFunction"]]
      and {text(r) for st in role_stmts for r in as_list(st.get("Resource"))} == {FN_ARN, FN_ARN + ":live"}, role_stmts)
check("ScaleFollowUpRole: ARNs from the FunctionName, no reference to the function (no circular dependency)",
      "ScaleOnAlarmFunction" not in json.dumps(role))
env = (soa["Properties"].get("Environment", {}) or {}).get("Variables", {})
check("scale-on-alarm: NBAOPS_SCALE__FOLLOWUP__GROUP is the schedule group",
      group_key and env.get("NBAOPS_SCALE__FOLLOWUP__GROUP") == {"Ref": group_key}, env.get("NBAOPS_SCALE__FOLLOWUP__GROUP"))
check("scale-on-alarm: NBAOPS_SCALE__FOLLOWUP__TARGET_ARN is its own live alias",
      text(env.get("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN", "")) == FN_ARN + ":live", env.get("NBAOPS_SCALE__FOLLOWUP__TARGET_ARN"))
check("scale-on-alarm: NBAOPS_SCALE__FOLLOWUP__ROLE_ARN is ScaleFollowUpRole",
      env.get("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN") == {"Fn::GetAtt": ["ScaleFollowUpRole", "Arn"]}, env.get("NBAOPS_SCALE__FOLLOWUP__ROLE_ARN"))
followup = [st for st in statements(soa) if str(st.get("Sid", "")).startswith("FollowUp")]
fu_actions = {a for st in followup for a in as_list(st.get("Action"))}
check("scale-on-alarm: the re-check statements are the FollowUp* ones",
      fu_actions == {"scheduler:CreateSchedule", "scheduler:DeleteSchedule", "iam:PassRole"}, fu_actions)
# Schedule ARN: arn:${Partition}:scheduler:${Region}:${Account}:schedule/${GroupName}/${ScheduleName}
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridgescheduler.html).
for action in ("scheduler:CreateSchedule", "scheduler:DeleteSchedule"):
    check(f"scale-on-alarm: {action} only on schedules of its group",
          resources_of([st for st in followup if action in as_list(st.get("Action"))])
          == {ARN + ":scheduler:${AWS::Region}:${AWS::AccountId}:schedule/" + FOLLOWUP_GROUP + "/*"},
          resources_of([st for st in followup if action in as_list(st.get("Action"))]))
# CreateSchedule passes the execution role: the caller needs iam:PassRole on it
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/security_iam_id-based-policy-examples.html).
passrole = [st for st in followup if "iam:PassRole" in as_list(st.get("Action"))]
check("scale-on-alarm: iam:PassRole of ScaleFollowUpRole only, only to scheduler.amazonaws.com",
      resources_of(passrole) == {"${ScaleFollowUpRole.Arn}"}
      and all(cond(st, "StringEquals", "iam:PassedToService") == "scheduler.amazonaws.com" for st in passrole) and passrole, passrole)
check("scale-on-alarm: iam:PassRole nowhere else in its policy",
      all(str(st.get("Sid", "")).startswith("FollowUp") for st in allows(soa, "iam:PassRole")))
# A re-check reads its alarm by name: DescribeAlarms authorised on the alarm's ARN or on "*"
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html).
alarm_pat = ARN + ":cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:nbaops-${Env}-*"
describe_on = resources_of(allows(soa, "cloudwatch:DescribeAlarms"))
check("scale-on-alarm: cloudwatch:DescribeAlarms covers nbaops-${Env}-* alarms (a re-check reads its alarm)",
      describe_on & {"*", alarm_pat}, describe_on)
check("every alarm scale-on-alarm receives is named nbaops-${Env}-* (readable at a re-check)",
      scaling_names and all(n.startswith("nbaops-${Env}-") for n in scaling_names), scaling_names)
# A one-time schedule is at(yyyy-mm-ddThh:mm:ss) in the given time zone
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/schedule-types.html#one-time), invoked within
# that minute with the flexible window OFF; ActionAfterCompletion DELETE removes it after its one
# invocation, so re-checks never pile up against the schedules quota
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/managing-schedule-delete.html).
port_src = (ROOT / "shared/src/ports/scheduler.rs").read_text()
adapter_src = (ROOT / "shared/src/adapters/scheduler.rs").read_text()
check("one-time schedules are at(yyyy-mm-ddThh:mm:ss) expressions",
      'format!("at({})", self.at.format("%Y-%m-%dT%H:%M:%S"))' in port_src)
check("one-time schedules are evaluated in UTC, flexible window OFF, deleted after completion",
      '.schedule_expression_timezone("UTC")' in adapter_src and "FlexibleTimeWindowMode::Off" in adapter_src
      and ".action_after_completion(ActionAfterCompletion::Delete)" in adapter_src)

# ---------------------------------------------------------------- 7. approved actions are dispatched
# An approval (functions/alert-router/src/approval.rs) becomes a one-time schedule approval-<id> in
# the approvals group, invoking the owning function's live alias through an execution role that
# Scheduler assumes. Both the URL function (a link's POST) and the router (approval by timeout in
# the sweep) create it.
APPROVALS_GROUP = "nbaops-${Env}-approvals"
ap_group = next((k for k, g in sched_groups.items() if text(g["Properties"].get("Name")) == APPROVALS_GROUP), None)
check("a schedule group nbaops-${Env}-approvals for approved actions", ap_group, sched_groups)
ap_role = of_type("AWS::IAM::Role").get("ApprovalsRole", {"Properties": {"AssumeRolePolicyDocument": {"Statement": []}}})
ap_trust = ap_role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
check("ApprovalsRole: assumed by scheduler.amazonaws.com only, aws:SourceAccount = this account",
      len(ap_trust) == 1 and as_list(ap_trust[0].get("Principal", {}).get("Service")) == ["scheduler.amazonaws.com"]
      and ap_trust[0].get("Action") == "sts:AssumeRole" and cond(ap_trust[0], "StringEquals", "aws:SourceAccount") == {"Ref": "AWS::AccountId"}, ap_trust)
ap_stmts = [st for p in ap_role["Properties"].get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
ap_invoke = {text(r) for st in ap_stmts for r in as_list(st.get("Resource"))}
check("ApprovalsRole: only lambda:InvokeFunction, only on live aliases of nbaops functions of this env",
      [as_list(st.get("Action")) for st in ap_stmts] == [["lambda:InvokeFunction"]] and ap_invoke
      and all(r.startswith(ARN + ":lambda:${AWS::Region}:${AWS::AccountId}:function:nbaops-${Env}-") and r.endswith(":live") for r in ap_invoke),
      ap_invoke)
ssm_params = {text(r["Properties"].get("Name")): r["Properties"].get("Value") for r in of_type("AWS::SSM::Parameter").values()}
check("alerts.approval.group in SSM is the approvals group",
      ap_group and ssm_params.get("/nbaops/${Env}/alerts/approval/group") == {"Ref": ap_group}, ssm_params.get("/nbaops/${Env}/alerts/approval/group"))
check("alerts.approval.role_arn in SSM is ApprovalsRole",
      ssm_params.get("/nbaops/${Env}/alerts/approval/role_arn") == {"Fn::GetAtt": ["ApprovalsRole", "Arn"]}, ssm_params.get("/nbaops/${Env}/alerts/approval/role_arn"))
ap_pairs = [t.split("=", 1) for t in text(ssm_params.get("/nbaops/${Env}/alerts/approval/targets", "")).split(",") if "=" in t]
ap_targets = {arn for _, arn in ap_pairs}
check("alerts.approval.targets in SSM: every target a live alias ApprovalsRole may invoke, and only those",
      ap_targets and ap_targets == ap_invoke, (ap_targets, ap_invoke))
check("alerts.approval.targets in SSM: each function named is the function its ARN invokes",
      ap_pairs and all(arn.endswith(f":function:nbaops-${{Env}}-{name}:live") for name, arn in ap_pairs), ap_pairs)
# The owners that carry approvals out (shared/src/config/approval.rs CARRIED_OUT) are exactly the
# targets: an owner without a target would never be reached, a target without an owner never asked.
carried = (ROOT / "shared/src/config/approval.rs").read_text()
carried = carried.split("pub const CARRIED_OUT", 1)[1].split("];", 1)[0]
owners = set(re.findall(r'\("[a-z_.]+", "([a-z-]+)"\)', carried))
check("alerts.approval.targets name exactly the functions of config/approval.rs CARRIED_OUT",
      owners and owners == {name for name, _ in ap_pairs}, (owners, ap_pairs))
for key in ("AlertRouterFunction", "AlertAckFunction"):
    f = functions.get(key, {"Properties": {}})
    creates = allows(f, "scheduler:CreateSchedule")
    check(f"{key}: scheduler:CreateSchedule only on schedules of the approvals group",
          resources_of(creates) == {ARN + ":scheduler:${AWS::Region}:${AWS::AccountId}:schedule/" + APPROVALS_GROUP + "/*"},
          resources_of(creates))
    passrole = allows(f, "iam:PassRole")
    check(f"{key}: iam:PassRole of ApprovalsRole only, only to scheduler.amazonaws.com",
          passrole and resources_of(passrole) == {"${ApprovalsRole.Arn}"}
          and all(cond(st, "StringEquals", "iam:PassedToService") == "scheduler.amazonaws.com" for st in passrole), passrole)
    check(f"{key}: no scheduler:DeleteSchedule (an approval's schedule deletes itself after it ran)",
          not allows(f, "scheduler:DeleteSchedule"))

# ---------------------------------------------------------------- 8. the immediate wraparound freeze
# Issue #22: a P1 wraparound finding makes pg-health create a one-time schedule in its own group
# that invokes vacuum-trigger's live alias through an execution role Scheduler assumes
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/setting-up.html#setting-up-execution-role).
EMERGENCY_GROUP = "nbaops-${Env}-pg-emergency"
em_group = next((k for k, g in sched_groups.items() if text(g["Properties"].get("Name")) == EMERGENCY_GROUP), None)
check("a schedule group nbaops-${Env}-pg-emergency for pg-health's emergency freezes", em_group, sched_groups)
vt = functions.get("VacuumTriggerFunction", {"Properties": {}})
VT_ARN = ARN + ":lambda:${AWS::Region}:${AWS::AccountId}:function:" + text(vt["Properties"].get("FunctionName"))
check("vacuum-trigger has the explicit FunctionName nbaops-${Env}-vacuum-trigger and a live alias (the freeze's target)",
      text(vt["Properties"].get("FunctionName")) == "nbaops-${Env}-vacuum-trigger" and vt["Properties"].get("AutoPublishAlias") == "live")
em_role = of_type("AWS::IAM::Role").get("PgEmergencyRole", {"Properties": {"AssumeRolePolicyDocument": {"Statement": []}}})
em_trust = em_role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
check("PgEmergencyRole: assumed by scheduler.amazonaws.com only, aws:SourceAccount = this account",
      len(em_trust) == 1 and as_list(em_trust[0].get("Principal", {}).get("Service")) == ["scheduler.amazonaws.com"]
      and em_trust[0].get("Action") == "sts:AssumeRole" and cond(em_trust[0], "StringEquals", "aws:SourceAccount") == {"Ref": "AWS::AccountId"}, em_trust)
em_stmts = [st for p in em_role["Properties"].get("Policies", []) for st in p["PolicyDocument"]["Statement"]]
check("PgEmergencyRole: only lambda:InvokeFunction on vacuum-trigger and its live alias",
      [as_list(st.get("Action")) for st in em_stmts] == [["lambda:InvokeFunction"]]
      and {text(r) for st in em_stmts for r in as_list(st.get("Resource"))} == {VT_ARN, VT_ARN + ":live"}, em_stmts)
pgh = functions.get("PgHealthFunction", {"Properties": {}})
pgh_env = (pgh["Properties"].get("Environment", {}) or {}).get("Variables", {})
check("pg-health: NBAOPS_PG__EMERGENCY_FREEZE__GROUP is the emergency group",
      em_group and pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__GROUP") == {"Ref": em_group}, pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__GROUP"))
check("pg-health: NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN is vacuum-trigger's live alias",
      text(pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN", "")) == VT_ARN + ":live", pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__TARGET_ARN"))
check("pg-health: NBAOPS_PG__EMERGENCY_FREEZE__ROLE_ARN is PgEmergencyRole",
      pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__ROLE_ARN") == {"Fn::GetAtt": ["PgEmergencyRole", "Arn"]}, pgh_env.get("NBAOPS_PG__EMERGENCY_FREEZE__ROLE_ARN"))
# Schedule ARN arn:...:scheduler:<region>:<account>:schedule/<group>/<name>
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoneventbridgescheduler.html).
check("pg-health: scheduler:CreateSchedule only on schedules of the emergency group",
      resources_of(allows(pgh, "scheduler:CreateSchedule")) == {ARN + ":scheduler:${AWS::Region}:${AWS::AccountId}:schedule/" + EMERGENCY_GROUP + "/*"},
      resources_of(allows(pgh, "scheduler:CreateSchedule")))
# CreateSchedule passes the execution role
# (https://docs.aws.amazon.com/scheduler/latest/UserGuide/security_iam_id-based-policy-examples.html).
em_pass = allows(pgh, "iam:PassRole")
check("pg-health: iam:PassRole of PgEmergencyRole only, only to scheduler.amazonaws.com",
      em_pass and resources_of(em_pass) == {"${PgEmergencyRole.Arn}"}
      and all(cond(st, "StringEquals", "iam:PassedToService") == "scheduler.amazonaws.com" for st in em_pass), em_pass)
check("pg-health: no scheduler:DeleteSchedule (the freeze's schedule deletes itself after it ran)",
      not allows(pgh, "scheduler:DeleteSchedule"))

# ---------------------------------------------------------------- SPEC numbers


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None  # a !Ref to a parameter


def alarm(metric, threshold, period, periods, op="GreaterThanThreshold"):
    return any(a["Properties"].get("MetricName") == metric and num(a["Properties"].get("Threshold", -1)) == threshold
               and a["Properties"].get("Period") == period and a["Properties"].get("EvaluationPeriods") == periods
               and a["Properties"].get("ComparisonOperator") == op for a in alarms.values())


check("alarm: Web/API CPU > 70 % for 5 minutes", alarm("CPUUtilization", 70, 300, 1))
check("alarm: Memcached memory > 75 % for 15 minutes",
      num(cache.get("Threshold")) == 75 and cache.get("EvaluationPeriods") == 3 and cache.get("ComparisonOperator") == "GreaterThanThreshold"
      and all(m["MetricStat"]["Period"] == 300 for m in cache.get("Metrics", []) if "MetricStat" in m))
check("alarm: RDS connections > 80 % (parameter, default 70 of ~87)", any(a["Properties"].get("MetricName") == "DatabaseConnections" for a in alarms.values()) and params.get("DbConnectionsThreshold", {}).get("Default") == 70)
check("alarm: RDS memory > 80 % (FreeableMemory low)", any(a["Properties"].get("MetricName") == "FreeableMemory" and a["Properties"].get("ComparisonOperator") == "LessThanThreshold" for a in alarms.values()))
check("alarm: RDS I/O wait > 10 %", alarm("IOWait", 10, 300, 1))
check("alarm: transaction IDs 500 M and 1 B", alarm("MaximumUsedTransactionIDs", 500000000, 300, 1) and alarm("MaximumUsedTransactionIDs", 1000000000, 300, 1))
check("alarm: replica lag > 30 s", alarm("ReplicaLag", 30, 60, 2))
scaling = {text(a["Properties"]["AlarmName"]) for a in alarms.values()
           if any(m[1] in ("CPUUtilization", "FreeableMemory", "DatabaseConnections", "IOWait", "BytesUsedForCacheItems") for m in metrics_of(a["Properties"]))}
check("scale-on-alarm receives exactly the scaling alarms", scaling_names == scaling, f"{sorted(scaling_names)} vs {sorted(scaling)}")
ledger = next(iter(of_type("AWS::DynamoDB::Table").values()), {}).get("Properties", {})
check("ledger: TTL and point-in-time recovery",
      ledger.get("TimeToLiveSpecification", {}).get("Enabled") is True
      and ledger.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True)
buckets = of_type("AWS::S3::Bucket")
check("log archive bucket keeps a year", any("365" in str(b["Properties"].get("LifecycleConfiguration")) for b in buckets.values()))
check("no secret inlined in the template", "hooks.slack.com" not in TEMPLATE.read_text())

conf = tomllib.loads((ROOT / "samconfig.toml").read_text())
for env in ("dev", "test", "prod"):
    p = conf.get(env, {}).get("deploy", {}).get("parameters", {})
    check(f"samconfig: [{env}.deploy.parameters] with Env={env}", f"Env={env}" in p.get("parameter_overrides", ""))
check("samconfig: prod confirms its change set", conf["prod"]["deploy"]["parameters"].get("confirm_changeset") is True)

# Each PostgreSQL function connects as its own role (infra/sql), whatever user PgDatabases names.
def env_of(key):
    return (functions.get(key, {}).get("Properties", {}).get("Environment", {}) or {}).get("Variables", {})
check("pg-health connects as nbaops_monitor", env_of("PgHealthFunction").get("NBAOPS_PG__MONITOR_USER") == "nbaops_monitor")
check("vacuum-trigger connects as nbaops_maintenance",
      env_of("VacuumTriggerFunction").get("NBAOPS_PG__MAINTENANCE_USER") == "nbaops_maintenance")

# The README's "Before your first deploy" and docs/deploy.md name every parameter a user gives.
readme = (ROOT / "README.md").read_text()
first_deploy = readme.split("## Before your first deploy", 1)[-1].split("\n## ", 1)[0] if "## Before your first deploy" in readme else ""
doc = (ROOT / "docs/deploy.md").read_text() if (ROOT / "docs/deploy.md").exists() else ""
for name in template.get("Parameters", {}):
    check(f"parameter {name} is in the README's 'Before your first deploy' and docs/deploy.md",
          f"`{name}`" in first_deploy and f"`{name}`" in doc)

# scale-on-alarm's off-peak checks (functions/scale-on-alarm/src/offpeak.rs): the CPU they read is
# a metric EC2 publishes per group (published_metrics.json, from the EC2 metrics page), read one
# datapoint a minute (a regular-resolution period is a multiple of 60 s and one call returns at most
# 1,440 datapoints: https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html,
# so scale.offpeak.lookback_minutes is capped at 1440), and the alarm state they ask DescribeAlarms for
# is one of its StateValue values (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html).
offpeak_src = (ROOT / "functions/scale-on-alarm/src/offpeak.rs").read_text()


def rust_const(src, name):
    m = re.search(rf"pub const {name}: [^=]+= ([^;]+);", src)
    return m.group(1).strip().strip('"') if m else None


ns, metric, dim = (rust_const(offpeak_src, n) for n in ("CPU_NAMESPACE", "CPU_METRIC", "CPU_DIMENSION"))
ec2 = published.get(ns or "", {})
check(f"off-peak CPU check reads a published metric: {ns} {metric} by {dim}",
      metric in ec2.get("metrics", []) and [dim] in ec2.get("dimensions", []), (ns, metric, dim))
period = rust_const(offpeak_src, "CPU_PERIOD_SECONDS")
scale_src = (ROOT / "shared/src/config/scale.rs").read_text()
cap = re.search(r"if lookback_minutes > (\d+)", scale_src)
check("off-peak CPU period is a multiple of 60 s and the lookback cap keeps a call within 1,440 datapoints",
      period is not None and int(period) % 60 == 0 and cap is not None and int(cap.group(1)) * 60 // int(period) <= 1440,
      (period, cap and cap.group(1)))
check("off-peak alarm check asks DescribeAlarms for a StateValue it knows",
      rust_const(offpeak_src, "ALARM_STATE") in ("OK", "ALARM", "INSUFFICIENT_DATA"))
offpeak_stmt = [s for s in statements(resources["ScaleOnAlarmFunction"]) if s.get("Sid") == "OffPeakChecks"]
check("scale-on-alarm: OffPeakChecks allows GetMetricStatistics on * (no resource-level permission)",
      len(offpeak_stmt) == 1 and offpeak_stmt[0].get("Effect") == "Allow"
      and as_list(offpeak_stmt[0]["Action"]) == ["cloudwatch:GetMetricStatistics"]
      and as_list(offpeak_stmt[0].get("Resource")) == ["*"], offpeak_stmt)
# DescribeAlarms takes the alarm ARN; scoped narrower than "*" it only cannot return composite alarms
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_DescribeAlarms.html), which
# the adapter never asks for (AlarmTypes=MetricAlarm).
check("scale-on-alarm: cloudwatch:DescribeAlarms only on this deployment's alarms",
      resources_of(allows(resources["ScaleOnAlarmFunction"], "cloudwatch:DescribeAlarms"))
      == {"arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}:alarm:nbaops-${Env}-*"})
check("the CloudWatch adapter asks DescribeAlarms for metric alarms only",
      (ROOT / "shared/src/adapters/cloudwatch.rs").read_text().count(".alarm_types(AlarmType::MetricAlarm)") == 2)

# ---------------------------------------------------------------- the dashboard
# A CloudWatch metric is its namespace, name and FULL set of dimensions: "CloudWatch treats each
# unique combination of dimensions as a separate metric. If a specific combination of dimensions was
# not published, you can't retrieve statistics for it"
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/API_GetMetricStatistics.html,
# https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/cloudwatch_concepts.html#Dimension).
# A widget naming another set shows nothing. Each row of a metric widget is
# [Namespace, MetricName, DimName, DimValue, ..., {options}]
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference/CloudWatch-Dashboard-Body-Structure.html);
# our rows must be one of the (namespace, name, dimension set) the code emits: the METRICS table of
# shared/src/telemetry.rs, where an EMF line's several DimensionSets each make a metric
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
telemetry_rs = (ROOT / "shared/src/telemetry.rs").read_text()
metric_defs = {}
for m in re.finditer(r'pub const (\w+): Metric = Metric \{\s*namespace: "([^"]+)",\s*name: "([^"]+)",\s*unit: "([^"]+)",\s*'
                     r'dimension_sets: &\[(.*?)\],\s*\};', telemetry_rs, re.S):
    sets = [sorted(re.findall(r'"([^"]+)"', inner)) for inner in re.findall(r"&\[([^\[\]]*)\]", m.group(5))]
    metric_defs[m.group(1)] = (m.group(2), m.group(3), sets)
table = re.search(r"pub const METRICS: &\[Metric\] = &\[([^\]]*)\];", telemetry_rs)
emitted = {}
for const in re.findall(r"\w+", table.group(1) if table else ""):
    if const in metric_defs:
        ns, name, sets = metric_defs[const]
        emitted[(ns, name)] = sets
check("telemetry.rs: METRICS lists the metrics it defines", table and emitted and len(emitted) == len(re.findall(r"\w+", table.group(1))),
      sorted(metric_defs))


def rust_strs(src, name):
    m = re.search(rf"pub const {name}: &\[&str\] = &\[([^\]]*)\];", src)
    return re.findall(r'"([^"]+)"', m.group(1)) if m else []


known_values = {"outcome": rust_strs(telemetry_rs, "OUTCOMES"), "step": rust_strs(telemetry_rs, "GUARD_STEPS"),
                "severity": rust_strs(telemetry_rs, "SEVERITIES"),
                # the `function` of an EMF line is the function's FUNCTION constant
                "function": sorted(re.search(r'pub const FUNCTION: &str = "([^"]+)";', p.read_text()).group(1)
                                   for p in ROOT.glob("functions/*/src/*.rs") if 'pub const FUNCTION: &str = "' in p.read_text()),
                "env": ["${Env}"]}
check("dimension values known (outcomes, guard steps, severities, functions)", all(known_values.values()), known_values)
dashboards = of_type("AWS::CloudWatch::Dashboard")
check("one CloudWatch dashboard, named per environment", len(dashboards) == 1
      and all(text(d["Properties"].get("DashboardName")) == "nbaops-${Env}" for d in dashboards.values()), list(dashboards))
body = {}
for key, d in dashboards.items():
    try:
        body = json.loads(text(d["Properties"]["DashboardBody"]))
        check(f"{key}: body is JSON with widgets", isinstance(body.get("widgets"), list) and body["widgets"])
    except (ValueError, KeyError) as e:
        check(f"{key}: body is JSON with widgets", False, e)
function_names = {text(f["Properties"].get("FunctionName")) for f in of_type("AWS::Serverless::Function").values()}
queue_names = {"${%s.QueueName}" % q for q in of_type("AWS::SQS::Queue")}
shown = []
for widget in body.get("widgets", []):
    if widget.get("type") != "metric":
        continue
    props = widget.get("properties", {})
    title = props.get("title", "?")
    problems = []
    for row in props.get("metrics", []):
        fields = [x for x in row if not isinstance(x, dict)]
        if len(fields) < 2 or len(fields) % 2 or "." in fields:
            problems.append(f"{row}: not a full row (no '.' shorthand)")
            continue
        ns, name, dims = fields[0], fields[1], dict(zip(fields[2::2], fields[3::2]))
        shown.append((ns, name, dims))
        what = f"{ns} {name} {sorted(dims)}"
        if ns.startswith("AWS/"):
            entry = published.get(ns)
            if not (entry and name in entry["metrics"] and sorted(dims) in [sorted(d) for d in entry["dimensions"]]):
                problems.append(f"{what}: not published (infra/tests/published_metrics.json)")
            if "FunctionName" in dims and dims["FunctionName"] not in function_names:
                problems.append(f"{what}: {dims['FunctionName']} is no function of this template")
            if "QueueName" in dims and dims["QueueName"] not in queue_names:
                problems.append(f"{what}: {dims['QueueName']} is no queue of this template")
        else:
            if sorted(dims) not in emitted.get((ns, name), []):
                problems.append(f"{what}: not emitted with that dimension set (telemetry.rs METRICS: {emitted.get((ns, name))})")
            bad = {k: v for k, v in dims.items() if k in known_values and v not in known_values[k]}
            if bad:
                problems.append(f"{what}: dimension values the code never emits: {bad}")
    check(f"dashboard '{title}': region and period set", props.get("region") == "${AWS::Region}" and props.get("period"))
    check(f"dashboard '{title}': {len(props.get('metrics', []))} metric(s), each emitted or published with exactly its dimension set",
          props.get("metrics") and not problems, problems)

def shows(ns, name, **dims):
    return any(s[0] == ns and s[1] == name and all(s[2].get(k) == v for k, v in dims.items()) for s in shown)


check("dashboard: actions of every function by every outcome",
      all(shows("nbaops", "Actions", function=f, outcome=o) for f in known_values["function"] for o in known_values["outcome"]))
check("dashboard: guard stops by every step", all(shows("nbaops", "GuardStops", step=s) for s in known_values["step"]))
check("dashboard: open incidents by every severity", all(shows("nbaops", "OpenIncidents", severity=s) for s in known_values["severity"]))
check("dashboard: pg-health scan time and findings",
      shows("nbaops/postgres", "ScanMillis", function="pg-health") and shows("nbaops/postgres", "Findings", function="pg-health"))
check("dashboard: Lambda errors of every function", all(shows("AWS/Lambda", "Errors", FunctionName=f) for f in function_names), function_names)
check("dashboard: visible messages of every queue (failed events, undelivered alerts)",
      all(shows("AWS/SQS", "ApproximateNumberOfMessagesVisible", QueueName=q) for q in queue_names), queue_names)
# The audit trail by day (`nbaops audit`, `nbaops status`), read without a table scan.
# - Only an item that has the index's key attribute is written to a global secondary index (GSIs are
#   sparse, https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/bp-indexes-general-sparse-indexes.html):
#   the audit records carry `day`, nothing else does, so the index holds the audit trail only.
# - INCLUDE projects the index and table keys plus the listed attributes
#   (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_Projection.html): `data`
#   (the record) with pk/sk/day is what DynamoLedger::query_day reads.
# - A GSI query is eventually consistent only (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html):
#   query_day must not ask for ConsistentRead, which DynamoDB refuses on a GSI.
# - Querying an index is authorised on the index's ARN, table/<name>/index/<index>
#   (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazondynamodb.html).
ledger_props = resources.get("Ledger", {}).get("Properties", {})
gsis = {g.get("IndexName"): g for g in ledger_props.get("GlobalSecondaryIndexes", [])}
by_day = gsis.get("by-day", {})
check("ledger: by-day index keyed (day HASH, sk RANGE)",
      [(k.get("AttributeName"), k.get("KeyType")) for k in by_day.get("KeySchema", [])] == [("day", "HASH"), ("sk", "RANGE")],
      by_day.get("KeySchema"))
check("ledger: day is a string attribute",
      {"AttributeName": "day", "AttributeType": "S"} in ledger_props.get("AttributeDefinitions", []))
proj = by_day.get("Projection", {})
check("ledger: by-day projects data (INCLUDE), what the command reads",
      proj.get("ProjectionType") == "ALL" or (proj.get("ProjectionType") == "INCLUDE" and "data" in proj.get("NonKeyAttributes", [])), proj)
adapter = (ROOT / "shared/src/adapters/dynamodb.rs").read_text()
check("ledger adapter: the index name and attribute are the template's",
      'pub const BY_DAY_INDEX: &str = "by-day";' in adapter and '.item("day", AttributeValue::S(day.into()))' in adapter)
qd = adapter[adapter.find("async fn query_day"):adapter.find("/// One `TransactWriteItems`")]
check("ledger adapter: query_day asks no ConsistentRead of the GSI", qd and "consistent_read" not in qd)
op_ledger = [st for st in resources.get("OperatorReadOnlyPolicy", {}).get("Properties", {}).get("PolicyDocument", {}).get("Statement", [])
             if st.get("Sid") == "Ledger"]
check("operator policy: Query allowed on the by-day index's ARN",
      op_ledger and any("/index/by-day" in str(r) for r in op_ledger[0].get("Resource", [])), op_ledger)

# ---------------------------------------------------------------- fan-out on SQS (issue #20)
# Every SQS event source mapping feeds a function's work queue to its live alias, at bounded
# concurrency, with partial batch failures, a dead-letter queue alarmed to the alerts topic, and
# the function's fanout.* settings agreeing with the queue.
mappings = of_type("AWS::Lambda::EventSourceMapping")
queues = of_type("AWS::SQS::Queue")
sqs_mappings = {k: m for k, m in mappings.items() if "Queue" in text(m["Properties"].get("EventSourceArn"))}
# The functions whose schedule fans out, and the task each was ticked with before (what its work
# items carry): pg-health's sweep, backup-guard's RPO check, offhours' tick (issue #20).
FANNED_OUT = {"PgHealthFunction": "pg-health", "BackupGuardFunction": "backup-rpo-check", "OffhoursFunction": "offhours"}
mapped = {text(m["Properties"].get("FunctionName")).strip("${}").split(".")[0] for m in sqs_mappings.values()}
for fn_key, work in FANNED_OUT.items():
    check(f"fan-out: {fn_key} ({work}) has a work queue and an event source mapping", fn_key in mapped, sorted(mapped))
    crate = str(functions.get(fn_key, {}).get("Properties", {}).get("CodeUri", "")).rstrip("/").rsplit("/", 1)[-1]
    # The function's targets() answers for that work (a dispatch of anything else is "not for me").
    src = "\n".join(f.read_text() for f in (ROOT / "functions" / crate / "src").glob("*.rs")) if crate else ""
    check(f"fan-out: {crate} fans out '{work}' (fn targets)", "async fn targets" in src and f'"{work}"' in src, crate)
check("fan-out: every mapped function is one that fans out", mapped <= set(FANNED_OUT), sorted(mapped - set(FANNED_OUT)))
for key, m in sqs_mappings.items():
    mp = m["Properties"]
    queue_key = text(mp["EventSourceArn"]).strip("${}").split(".")[0]
    queue = queues.get(queue_key, {}).get("Properties", {})
    fn_key = text(mp.get("FunctionName")).strip("${}").split(".")[0]
    fn = functions.get(fn_key, {})
    fprops = fn.get("Properties", {})
    fenv = fprops.get("Environment", {}).get("Variables", {})
    check(f"{key}: feeds {fn_key}'s live alias (what a canary deploy moves)",
          fn and text(mp.get("FunctionName")) == "${%s.Alias}" % fn_key and fprops.get("AutoPublishAlias"), mp.get("FunctionName"))
    # https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-errorhandling.html: without
    # ReportBatchItemFailures Lambda ignores the function's batchItemFailures and retries the batch.
    check(f"{key}: FunctionResponseTypes [ReportBatchItemFailures]", mp.get("FunctionResponseTypes") == ["ReportBatchItemFailures"])
    # https://docs.aws.amazon.com/lambda/latest/dg/API_ScalingConfig.html: MaximumConcurrency 2..1000.
    mc = mp.get("ScalingConfig", {}).get("MaximumConcurrency")
    mc_param = params.get(mc.get("Ref"), {}) if isinstance(mc, dict) else {}
    check(f"{key}: ScalingConfig.MaximumConcurrency from a parameter bounded 2..1000",
          mc_param.get("Type") == "Number" and num(mc_param.get("MinValue")) >= 2 and num(mc_param.get("MaxValue")) <= 1000
          and 2 <= num(mc_param.get("Default")) <= 1000, mc)
    # https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html: visibility timeout
    # at least six times the function's timeout.
    timeout = num(fprops.get("Timeout", globals_fn.get("Timeout", 3)))
    check(f"{key}: {queue_key} visibility timeout >= 6 x {fn_key}'s timeout",
          num(queue.get("VisibilityTimeout", 30)) >= 6 * timeout, (queue.get("VisibilityTimeout"), timeout))
    redrive = queue.get("RedrivePolicy", {})
    dlq_key = text(redrive.get("deadLetterTargetArn", "")).strip("${}").split(".")[0]
    dlq = queues.get(dlq_key, {}).get("Properties", {})
    check(f"{key}: {queue_key} has its own dead-letter queue (RedrivePolicy)", dlq_key in queues and dlq_key != queue_key, redrive)
    # A message's age counts from its first enqueue, so the DLQ must keep messages longer
    # (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-dead-letter-queues.html).
    check(f"{key}: {dlq_key} keeps messages longer than {queue_key}",
          num(dlq.get("MessageRetentionPeriod", 345600)) > num(queue.get("MessageRetentionPeriod", 345600)))
    check(f"{key}: NBAOPS_FANOUT__MAX_RECEIVE_COUNT = maxReceiveCount (the P2 is raised on the last receive)",
          str(fenv.get("NBAOPS_FANOUT__MAX_RECEIVE_COUNT")) == str(redrive.get("maxReceiveCount")),
          (fenv.get("NBAOPS_FANOUT__MAX_RECEIVE_COUNT"), redrive.get("maxReceiveCount")))
    check(f"{key}: NBAOPS_FANOUT__QUEUE_URL is {queue_key} (Ref of a queue is its URL)",
          fenv.get("NBAOPS_FANOUT__QUEUE_URL") == {"Ref": queue_key}, fenv.get("NBAOPS_FANOUT__QUEUE_URL"))
    budget = num(fenv.get("NBAOPS_FANOUT__TARGET_BUDGET_SECONDS", 50))
    check(f"{key}: BatchSize x target budget + 2 s margin fit {fn_key}'s timeout",
          num(mp.get("BatchSize", 10)) * budget + 2 <= timeout, (mp.get("BatchSize"), budget, timeout))
    if fn_key == "PgHealthFunction":
        # pg-health starts a scan only with room for a connection and a statement before the
        # item's deadline, less the 2 s margin (functions/pg-health/src/handler.rs, Budget): a
        # smaller budget fails every work item unscanned.
        pg_src = (ROOT / "shared/src/config/pg.rs").read_text()
        default = lambda k: num(re.search(r'\("%s", "(\d+)"' % re.escape(k), pg_src).group(1))
        needs = default("pg.connect_timeout_seconds") + default("pg.statement_timeout_ms") / 1000 + 2
        check(f"{key}: the target budget leaves pg-health room to start a scan (connect + statement + margin)",
              budget >= needs, (budget, needs))
    dlq_alarms = [a for a in alarms.values() if a["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
                  and dlq_key in str(a["Properties"].get("Dimensions"))]
    check(f"{key}: an alarm on {dlq_key}'s depth to the alerts topic (alarm and OK)",
          any(ALERTS_TOPIC in a["Properties"].get("AlarmActions", []) and ALERTS_TOPIC in a["Properties"].get("OKActions", [])
              and num(a["Properties"].get("Threshold")) == 0 for a in dlq_alarms), dlq_alarms)
    # SendMessageBatch is authorised as sqs:SendMessage; the mapping polls with the execution role
    # (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html,
    # https://docs.aws.amazon.com/lambda/latest/dg/services-sqs-configure.html).
    for action in ("sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        check(f"{key}: {fn_key} may {action} on {queue_key} only",
              fn and resources_of(allows(fn, action)) == {"${%s.Arn}" % queue_key}, resources_of(allows(fn, action)) if fn else None)
    work = FANNED_OUT.get(fn_key)
    inputs = [e["Properties"].get("Input", "") for e in fprops.get("Events", {}).values() if e.get("Type") == "ScheduleV2"]
    dispatches = [i for i in inputs if json.loads(i or "{}").get("nbaops", {}).get("task") == "dispatch"]
    check(f"{key}: {fn_key}'s schedule dispatches its own work ({work}), no direct tick of it left",
          work is not None and [json.loads(i)["nbaops"].get("work") for i in dispatches] == [work]
          and not any(json.loads(i or "{}").get("nbaops", {}).get("task") == work for i in inputs), inputs)

# Issue #22 (SPEC 6): the cost allocation tags on every resource of the template that takes tags.
# Which types take tags, and under which property, is the CloudFormation registry schema's
# `tagging` section (taggable, tagProperty), which cfn-lint ships for every region
# (https://docs.aws.amazon.com/cloudformation-cli/latest/userguide/resource-type-schema.html#schema-properties-tagging).
# The types handled below are listed; the template's other types take no tags in CloudFormation
# (Events::EventBusPolicy, IAM::ManagedPolicy, KMS::Alias, Logs::MetricFilter,
# Logs::SubscriptionFilter, S3::BucketPolicy, SNS::TopicPolicy): they are skipped.
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER  # noqa: E402

COST_TAGS = {"nbaops:env": "${Env}", "team": "${TeamTag}", "cost-center": "${CostCenterTag}"}
TAGGED_TYPES = {  # type -> its tag property (a list of {Key, Value}, or a map for SSM::Parameter)
    "AWS::CloudWatch::Alarm": "Tags", "AWS::CloudWatch::Dashboard": "Tags", "AWS::DynamoDB::Table": "Tags",
    "AWS::IAM::Role": "Tags", "AWS::KMS::Key": "Tags", "AWS::KinesisFirehose::DeliveryStream": "Tags",
    "AWS::Lambda::EventSourceMapping": "Tags", "AWS::Logs::LogGroup": "Tags", "AWS::RDS::EventSubscription": "Tags",
    "AWS::S3::Bucket": "Tags", "AWS::SNS::Topic": "Tags", "AWS::SQS::Queue": "Tags", "AWS::SSM::Parameter": "Tags",
    "AWS::Scheduler::ScheduleGroup": "Tags", "AWS::Budgets::Budget": "ResourceTags",
    "AWS::CE::AnomalyMonitor": "ResourceTags", "AWS::CE::AnomalySubscription": "ResourceTags",
    "AWS::ECS::Cluster": "Tags", "AWS::ECS::TaskDefinition": "Tags",  # issue #22's pg_dump producer
}


def tag_property(rtype):
    """The registry schema's tag property of a type ('Tags'), None when the type takes no tags."""
    tagging = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", rtype).schema.get("tagging", {})
    if not tagging.get("taggable", False):
        return None
    return tagging.get("tagProperty", "/properties/Tags").rsplit("/", 1)[-1]


def tags_of(v):
    if isinstance(v, dict):
        return {k: text(x) for k, x in v.items()}
    return {t.get("Key"): text(t.get("Value")) for t in (v or []) if isinstance(t, dict)}


for rtype in sorted({r.get("Type") for r in resources.values()} - {"AWS::Serverless::Function"}):
    check(f"tags: {rtype} is handled as the registry schema says (tag property {tag_property(rtype)})",
          TAGGED_TYPES.get(rtype) == tag_property(rtype), (TAGGED_TYPES.get(rtype), tag_property(rtype)))
for key, r in sorted(resources.items()):
    prop = TAGGED_TYPES.get(r.get("Type"))
    if prop:
        have = tags_of(r.get("Properties", {}).get(prop))
        check(f"tags: {key} carries the cost allocation tags {sorted(COST_TAGS)}",
              all(have.get(k) == v for k, v in COST_TAGS.items()), have)
for key, fn in sorted(functions.items()):
    have = {**tags_of(globals_fn.get("Tags")), **tags_of(fn["Properties"].get("Tags"))}
    check(f"tags: function {key} carries the cost allocation tags (Globals: Function: Tags)",
          all(have.get(k) == v for k, v in COST_TAGS.items()), have)
# SAM puts a function's Tags on the resources it generates for it (its role, event-rule roles,
# CodeDeploy application and deployment groups) only with PropagateTags
# (https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-resource-function.html#sam-function-propagatetags).
# Not covered: the EventBridge rules SAM generates for EventBridgeRule events stay untagged (a rule costs nothing).
check("tags: Globals: Function: PropagateTags is true", globals_fn.get("PropagateTags") is True, globals_fn.get("PropagateTags"))
for name in ("TeamTag", "CostCenterTag"):
    check(f"tags: parameter {name} has a non-empty default", str(params.get(name, {}).get("Default", "")).strip(), params.get(name))

# The budget, the anomaly monitor and its subscription: made by a deploy, named so cost-anomaly
# attributes them, pointed at the cost topic.
COST_TOPIC = "${CostAlertsTopic}"
cost_src = (ROOT / "functions/cost-anomaly/src/plan.rs").read_text()
ENV_TOKENS = {"dev", "development", "test", "testing", "prod", "production"}


def env_tokens(name, env):
    """The environment tokens cost-anomaly's env_in_name finds in a name (split on non-alphanumerics)."""
    return {t.lower() for t in re.split(r"[^A-Za-z0-9]", name.replace("${Env}", env))} & ENV_TOKENS


check("cost: cost-anomaly still reads the environment from budget and monitor names (env_in_name)",
      "env_in_name(&b.budget_name)" in cost_src and "env_in_name(m)" in cost_src)
budgets = of_type("AWS::Budgets::Budget")
monitors = of_type("AWS::CE::AnomalyMonitor")
subscriptions = of_type("AWS::CE::AnomalySubscription")
check("cost: one budget, one anomaly monitor, one anomaly subscription", (len(budgets), len(monitors), len(subscriptions)) == (1, 1, 1),
      (list(budgets), list(monitors), list(subscriptions)))
cost_cond = {r.get("Condition") for r in [*budgets.values(), *monitors.values(), *subscriptions.values()]}
check("cost: the three share a condition that is exactly CostControls=true (off for a second stack of an environment in an account)",
      len(cost_cond) == 1 and conditions.get(next(iter(cost_cond))) == {"Fn::Equals": [{"Ref": "CostControls"}, "true"]}
      and params.get("CostControls", {}).get("Default") == "true", cost_cond)
envs = params.get("Env", {}).get("AllowedValues", [])
fixture_budget = json.loads(json.loads((ROOT / "events/cost/budget-json-forecast.json").read_text())["Records"][0]["Sns"]["Message"])["budgetName"] \
    if (ROOT / "events/cost/budget-json-forecast.json").exists() else None
for key, b in budgets.items():
    props = b["Properties"]
    data = props.get("Budget", {})
    name = text(data.get("BudgetName"))
    check(f"cost: {key} is a MONTHLY COST budget", (data.get("BudgetType"), data.get("TimeUnit")) == ("COST", "MONTHLY"), data)
    check(f"cost: {key}'s name names exactly its environment for cost-anomaly, as the fixture does ({fixture_budget})",
          all(env_tokens(name, e) == {e} for e in envs) and name.replace("${Env}", "dev") == fixture_budget, name)
    # BudgetName: ':' and '\' are not allowed, 1-100 characters
    # (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_budgets_Budget.html).
    check(f"cost: {key}'s name has no ':' or '\\' and fits 100 characters",
          not re.search(r"[:\\]", name.replace("${Env}", "")) and len(name.replace("${Env}", "prod")) <= 100, name)
    amount = text(data.get("BudgetLimit", {}).get("Amount"))
    mapping = template.get("Mappings", {}).get("CostDefaults", {})
    check(f"cost: {key}'s amount is the MonthlyBudgetUsd parameter, else a positive default for each environment",
          "MonthlyBudgetUsd" in amount and all(num(mapping.get(e, {}).get("MonthlyBudgetUsd", 0)) > 0 for e in envs)
          and data.get("BudgetLimit", {}).get("Unit") == "USD", (amount, mapping))
    # CostFilters is deprecated in the Budgets API (since 2025-04-18) for FilterExpression, an
    # Expression whose Tags filter names the tag key (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_budgets_Budget.html,
    # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-budgets-budget-expression.html).
    fe = data.get("FilterExpression", {}).get("Tags", {})
    check(f"cost: {key} counts only the cost tagged <CostEnvTagKey>=<Env> (FilterExpression, no deprecated CostFilters)",
          fe.get("Key") == {"Ref": "CostEnvTagKey"} and fe.get("Values") == [{"Ref": "Env"}] and "CostFilters" not in data
          and params.get("CostEnvTagKey", {}).get("Default") == "nbaops:env", data.get("FilterExpression"))
    # Metrics: at most one metric (API_budgets_Budget.html); the one cost-anomaly's daily check uses.
    check(f"cost: {key} measures cost.metric's default (UnblendedCost)",
          data.get("Metrics") == ["UnblendedCost"] and '("cost.metric", "UnblendedCost"' in (ROOT / "shared/src/config/cost.rs").read_text(),
          data.get("Metrics"))
    notes = props.get("NotificationsWithSubscribers", [])
    # A budget has up to five notifications (CreateBudget: https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_budgets_CreateBudget.html);
    # a notification has one SNS subscriber and up to 10 email subscribers, 11 in all
    # (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_budgets_NotificationWithSubscribers.html).
    check(f"cost: {key} has at most 5 notifications", 1 <= len(notes) <= 5, len(notes))
    for i, n in enumerate(notes):
        subs = n.get("Subscribers", [])
        sns = [x for x in subs if x.get("SubscriptionType") == "SNS"]
        check(f"cost: {key} notification {i}: 1-11 subscribers, at most one SNS, and that one the cost topic",
              1 <= len(subs) <= 11 and len(sns) == 1 and text(sns[0].get("Address")) == COST_TOPIC, subs)
    kinds = {(n["Notification"].get("NotificationType"), n["Notification"].get("ThresholdType"), text(n["Notification"].get("Threshold")),
              n["Notification"].get("ComparisonOperator")) for n in notes}
    check(f"cost: {key} notifies on ACTUAL spend past BudgetActualThresholdPercent and FORECASTED past BudgetForecastThresholdPercent (100 by default)",
          kinds == {("ACTUAL", "PERCENTAGE", "${BudgetActualThresholdPercent}", "GREATER_THAN"),
                    ("FORECASTED", "PERCENTAGE", "${BudgetForecastThresholdPercent}", "GREATER_THAN")}
          and num(params.get("BudgetForecastThresholdPercent", {}).get("Default")) == 100, kinds)
fixture_monitor = "nbaops-dev-services"
check("cost: the anomaly fixture's monitor is still named for its environment", fixture_monitor in (ROOT / "events/cost/sns-anomaly-multiple-root-causes.json").read_text())
for key, m in monitors.items():
    props = m["Properties"]
    name = text(props.get("MonitorName"))
    check(f"cost: {key}'s name names exactly its environment for cost-anomaly",
          all(env_tokens(name, e) == {e} for e in envs), name)
    # Customer managed (CUSTOM) monitors: no MonitorDimension; a cost allocation tag monitor's
    # specification is {"Tags": {"Key": ..., "Values": [up to 10]}}
    # (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_AnomalyMonitor.html).
    spec = text(props.get("MonitorSpecification")).replace("${CostEnvTagKey}", "nbaops:env").replace("${Env}", "dev")
    try:
        spec = json.loads(spec)
    except ValueError:
        spec = {}
    check(f"cost: {key} is a CUSTOM monitor of the cost tagged <CostEnvTagKey>=<Env>, without MonitorDimension",
          props.get("MonitorType") == "CUSTOM" and "MonitorDimension" not in props
          and spec.get("Tags", {}).get("Key") == "nbaops:env" and spec["Tags"].get("Values") == ["dev"], (props.get("MonitorType"), spec))
for key, sub in subscriptions.items():
    props = sub["Properties"]
    subs = props.get("Subscribers", [])
    # Notifications go over email for DAILY and WEEKLY, over SNS for IMMEDIATE
    # (https://docs.aws.amazon.com/aws-cost-management/latest/APIReference/API_AnomalySubscription.html).
    check(f"cost: {key} publishes to the cost topic only, so its frequency is IMMEDIATE",
          [(x.get("Type"), text(x.get("Address"))) for x in subs] == [("SNS", COST_TOPIC)] and props.get("Frequency") == "IMMEDIATE",
          (subs, props.get("Frequency")))
    check(f"cost: {key} watches the template's monitor", [text(a) for a in props.get("MonitorArnList", [])] == ["${%s}" % k for k in monitors])
    # ThresholdExpression: dimensions ANOMALY_TOTAL_IMPACT_ABSOLUTE / _PERCENTAGE, match option
    # GREATER_THAN_OR_EQUAL required, values numbers as strings; not with the deprecated Threshold
    # (same page).
    raw = text(props.get("ThresholdExpression"))
    try:
        expr = json.loads(raw.replace("${AnomalyImpactUsd}", "20").replace("${AnomalyImpactPercent}", "10"))
    except ValueError:
        expr = {}
    dims = [d.get("Dimensions", {}) for d in expr.get("And", expr.get("Or", [expr]))]
    check(f"cost: {key}'s ThresholdExpression: total impact in USD (AnomalyImpactUsd) and in percent (AnomalyImpactPercent), >=, no Threshold",
          sorted(d.get("Key", "") for d in dims) == ["ANOMALY_TOTAL_IMPACT_ABSOLUTE", "ANOMALY_TOTAL_IMPACT_PERCENTAGE"]
          and all(d.get("MatchOptions") == ["GREATER_THAN_OR_EQUAL"] and len(d.get("Values", [])) == 1 for d in dims)
          and "${AnomalyImpactUsd}" in raw and "${AnomalyImpactPercent}" in raw and "Threshold" not in props, raw)
for key, r in [*budgets.items(), *subscriptions.items()]:
    check(f"cost: {key} is created after the cost topic's policy lets its service publish",
          "CostAlertsTopicPolicy" in as_list(r.get("DependsOn", [])), r.get("DependsOn"))
# The cost topic's policy lets both services publish to it
# (https://docs.aws.amazon.com/cost-management/latest/userguide/budgets-sns-policy.html,
# https://docs.aws.amazon.com/cost-management/latest/userguide/ad-SNS.html), and so does its key's policy
# (https://docs.aws.amazon.com/sns/latest/dg/sns-key-management.html).
cost_policy = [s for tp in topic_policies.values() if COST_TOPIC in [text(t) for t in tp["Properties"].get("Topics", [])]
               for s in tp["Properties"]["PolicyDocument"].get("Statement", [])]
for service in ("budgets.amazonaws.com", "costalerts.amazonaws.com"):
    check(f"cost: the cost topic's policy lets {service} publish to it",
          any(s.get("Effect") == "Allow" and service in as_list(s.get("Principal", {}).get("Service")) and "sns:Publish" in as_list(s.get("Action"))
              and text(s.get("Resource")) == COST_TOPIC for s in cost_policy), cost_policy)
    key_stmts = [s for k in of_type("AWS::KMS::Key").values() for s in k["Properties"]["KeyPolicy"]["Statement"]]
    check(f"cost: the cost topic's key lets {service} use it",
          any(s.get("Effect") == "Allow" and service in as_list(s.get("Principal", {}).get("Service")) for s in key_stmts)
          and text(topics.get("CostAlertsTopic", {}).get("Properties", {}).get("KmsMasterKeyId")) == "${AlertsKey.Arn}")

# Issue #22: backup-guard replicates automated backups to the DR region. The call is made in the
# DR region with the source instance's ARN
# (https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_StartDBInstanceAutomatedBackupsReplication.html):
# allowed on the managed instance and the DR region's replicated backups only; the DR region's
# recovery point is read with DescribeDBInstanceAutomatedBackups, a list naming no resource
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonrds.html); an
# encrypted source needs its own region's key too, granted to RDS only
# (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/AutomatedXREGBackups.Troubleshooting.html).
bg = functions.get("BackupGuardFunction", {"Properties": {}})
res = resources_of(allows(bg, "rds:StartDBInstanceAutomatedBackupsReplication"))
check("BackupGuardFunction: StartDBInstanceAutomatedBackupsReplication only on the managed instance and DR auto-backups",
      res == {"arn:${AWS::Partition}:rds:${AWS::Region}:${AWS::AccountId}:db:${DbInstanceId}",
              "arn:${AWS::Partition}:rds:${DrRegion}:${AWS::AccountId}:auto-backup:*"}, res)
check("BackupGuardFunction: DescribeDBInstanceAutomatedBackups on '*' (a list of the DR region)",
      resources_of(allows(bg, "rds:DescribeDBInstanceAutomatedBackups")) == {"*"})
src_grants = [s for s in allows(bg, "kms:CreateGrant") if "${AWS::Region}" in str(s.get("Resource"))]
check("BackupGuardFunction: the source region's key granted to RDS only (GrantIsForAWSResource, via rds)",
      src_grants and all(cond(s, "Bool", "kms:GrantIsForAWSResource") in (True, "true")
                         and text(cond(s, "StringEquals", "kms:ViaService") or "") == "rds.${AWS::Region}.amazonaws.com"
                         for s in src_grants), src_grants)
# One switch for the DR recovery point: backup-guard replicates (backup.dr_replication.enabled) and
# posture-check judges rds.dr_replication (posture.dr_region) under the same parameter, so a deploy
# is never told daily that backups it chose not to replicate are not replicated.
dr_switch = params.get("DrBackupReplication", {})
check("DrBackupReplication: a true/false parameter, off by default (replicated backups are billed)",
      dr_switch.get("AllowedValues") == ["true", "false"] and dr_switch.get("Default") == "false", dr_switch)
check("BackupGuardFunction: NBAOPS_BACKUP__DR_REPLICATION__ENABLED is DrBackupReplication",
      text(env_of("BackupGuardFunction").get("NBAOPS_BACKUP__DR_REPLICATION__ENABLED")) == "${DrBackupReplication}")
pc_dr = env_of("PostureCheckFunction").get("NBAOPS_POSTURE__DR_REGION")
check("PostureCheckFunction: NBAOPS_POSTURE__DR_REGION is DrRegion exactly when backups are replicated (else empty: not checked)",
      pc_dr == {"Fn::If": ["ReplicatesBackupsToDr", {"Ref": "DrRegion"}, ""]}
      and conditions.get("ReplicatesBackupsToDr") == {"Fn::Equals": [{"Ref": "DrBackupReplication"}, "true"]}, pc_dr)

# Issue #22: the PostgreSQL log's autovacuum failures, subscribed to pg-health's live alias
# (functions/pg-health/src/logs.rs). RDS names the log group /aws/rds/instance/<id>/postgresql
# (/aws/rds/cluster/<id>/postgresql for a cluster)
# (https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/USER_LogAccess.Concepts.PostgreSQL.html),
# the form shared/src/events/logs.rs (rds_postgresql_source) accepts. A Lambda destination needs a
# resource-based permission for logs.amazonaws.com, scoped by SourceArn (the log group ARN, ':*')
# and SourceAccount (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/SubscriptionFilters.html#LambdaFunctionExample),
# in place before the filter (CloudWatch Logs tests the destination on creation). The pattern is
# an OR of exact phrases: each term `?"phrase"`
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html), exactly
# logs.rs's FILTER_TERMS. At most two subscription filters per log group
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-logs-subscriptionfilter.html).
pg_logs_src = (ROOT / "functions/pg-health/src/logs.rs").read_text()
pg_events_src = (ROOT / "shared/src/events/logs.rs").read_text()
filter_terms = re.findall(r'^\s*"([^"]+)",$', pg_logs_src.split("pub const FILTER_TERMS", 1)[-1].split("];", 1)[0], re.M)
check("pg logs: logs.rs names its FILTER_TERMS", len(filter_terms) >= 5, filter_terms)
check("pg logs: the events crate reads /aws/rds/instance|cluster/<id>/postgresql log groups",
      '"/aws/rds/"' in pg_events_src and '"instance/"' in pg_events_src and '"cluster/"' in pg_events_src
      and '"/postgresql"' in pg_events_src)
LOG_GROUP_RE = re.compile(r"^/aws/rds/(instance|cluster)/[A-Za-z0-9-]{1,63}/postgresql$")
log_filters = of_type("AWS::Logs::SubscriptionFilter")
pg_log_filters = {k: r for k, r in log_filters.items() if text(r["Properties"].get("DestinationArn")) == "${PgHealthFunction.Alias}"}
check("pg logs: pg-health is subscribed to the instance's PostgreSQL log (and one more, optional)", len(pg_log_filters) == 2, sorted(pg_log_filters))
permissions = of_type("AWS::Lambda::Permission")
log_groups_filtered = {}
for key, r in sorted(pg_log_filters.items()):
    p = r["Properties"]
    group = text(p.get("LogGroupName"))
    log_groups_filtered.setdefault(group, []).append(key)
    if group == "${PgLogGroupExtra}":
        pattern = params.get("PgLogGroupExtra", {}).get("AllowedPattern", "")
        samples_ok = all(bool(re.match(pattern, g)) == ok for g, ok in [
            ("", True), ("/aws/rds/instance/db-1/postgresql", True), ("/aws/rds/cluster/aurora-a/postgresql", True),
            ("/aws/rds/instance/db-1/upgrade", False), ("/aws/lambda/x", False), ("/aws/rds/instance//postgresql", False)])
        check(f"pg logs: {key}: PgLogGroupExtra admits only RDS PostgreSQL log groups (or empty)", samples_ok, pattern)
    else:
        check(f"pg logs: {key}: on the PostgreSQL log group of DbInstanceId",
              group == "/aws/rds/instance/${DbInstanceId}/postgresql" and LOG_GROUP_RE.match(group.replace("${DbInstanceId}", "db-1")), group)
    check(f"pg logs: {key}: only when its log group exists (a Condition)", r.get("Condition") in conditions, r.get("Condition"))
    terms = re.findall(r'\?"([^"]+)"', p.get("FilterPattern", ""))
    rebuilt = " ".join(f'?"{t}"' for t in terms)
    check(f"pg logs: {key}: FilterPattern is an OR of exact phrases, exactly logs.rs's FILTER_TERMS",
          rebuilt == p.get("FilterPattern") and terms == filter_terms, (terms, filter_terms))
    check(f"pg logs: {key}: no RoleArn (a Lambda destination is authorised by its resource policy)", "RoleArn" not in p)
    deps = as_list(r.get("DependsOn", []))
    perm = [permissions[d] for d in deps if d in permissions]
    check(f"pg logs: {key}: DependsOn its Lambda permission", len(perm) == 1, deps)
    if perm:
        pp = perm[0]["Properties"]
        check(f"pg logs: {key}: the permission lets logs.amazonaws.com invoke the same alias, for this log group and account only",
              pp.get("Principal") == "logs.amazonaws.com" and pp.get("Action") == "lambda:InvokeFunction"
              and text(pp.get("FunctionName")) == "${PgHealthFunction.Alias}"
              and text(pp.get("SourceArn")) == "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:" + group + ":*"
              and text(pp.get("SourceAccount")) == "${AWS::AccountId}"
              and perm[0].get("Condition") == r.get("Condition"), pp)
for group, keys in log_groups_filtered.items():
    others = [k for k, s in log_filters.items() if text(s["Properties"].get("LogGroupName")) == group]
    check(f"pg logs: at most two subscription filters on {group}, one of them nbaops'", len(others) == 1, others)

# ---------------------------------------------------------------- backups in S3 (issue #22)
# The bucket, one lifecycle rule per kind of backup-guard's `backup-s3-check`
# (shared/src/config/backup.rs: backup.s3.<kind>.prefix / retention_days), the function's
# listing, and the producer of the weekly logical backup (docs/backups-s3.md).
backup_src = (ROOT / "shared/src/config/backup.rs").read_text()


def backup_default(key):
    m = re.search(r'\("' + re.escape(key) + r'", "([^"]*)"', backup_src)
    return m.group(1) if m else None


bucket = resources.get("BackupBucket", {})
bprops = bucket.get("Properties", {})
check("backups: BackupBucket is an S3 bucket kept on delete and replace",
      bucket.get("Type") == "AWS::S3::Bucket" and bucket.get("DeletionPolicy") == "Retain" and bucket.get("UpdateReplacePolicy") == "Retain")
check("backups: BackupBucket encrypted, every public access blocked, versioned",
      bprops.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", [{}])[0].get("ServerSideEncryptionByDefault", {}).get("SSEAlgorithm") in ("AES256", "aws:kms")
      and all(bprops.get("PublicAccessBlockConfiguration", {}).get(k) is True
              for k in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
      and bprops.get("VersioningConfiguration", {}).get("Status") == "Enabled")
bpol = [s for p in of_type("AWS::S3::BucketPolicy").values() if text(p["Properties"].get("Bucket")) == "${BackupBucket}"
        for s in p["Properties"]["PolicyDocument"].get("Statement", [])]
check("backups: BackupBucket refuses requests without TLS (aws:SecureTransport false -> Deny)",
      any(s.get("Effect") == "Deny" and cond(s, "Bool", "aws:SecureTransport") in (False, "false") for s in bpol), bpol)
rules = bprops.get("LifecycleConfiguration", {}).get("Rules", [])


def rule_for(prefix):
    # A rule's scope: Prefix, or Filter.Prefix
    # (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-s3-bucket-lifecycleconfiguration.html).
    return [r for r in rules if r.get("Status") == "Enabled" and (r.get("Prefix") or r.get("Filter", {}).get("Prefix")) == prefix]


# Transition StorageClass allowed values
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-properties-s3-bucket-transition.html).
TRANSITION_CLASSES = {"DEEP_ARCHIVE", "GLACIER", "GLACIER_IR", "INTELLIGENT_TIERING", "ONEZONE_IA", "STANDARD_IA"}
grace_h = num(backup_default("backup.s3.lifecycle_grace_hours"))
for kind in ("logical", "wal", "physical"):
    prefix = backup_default(f"backup.s3.{kind}.prefix")
    days = num(backup_default(f"backup.s3.{kind}.retention_days"))
    found = rule_for(prefix)
    check(f"backups: one enabled lifecycle rule on {prefix} (backup.s3.{kind}.prefix) expiring after backup.s3.{kind}.retention_days ({days})",
          len(found) == 1 and num(found[0].get("ExpirationInDays")) == days, found)
    check(f"backups: the {kind} rule expires noncurrent versions and aborts incomplete uploads (a versioned bucket keeps them otherwise)",
          len(found) == 1 and found[0].get("NoncurrentVersionExpiration", {}).get("NoncurrentDays")
          and found[0].get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation"), found)
    classes = [c.strip() for c in (backup_default(f"backup.s3.{kind}.storage_classes") or "").split(",") if c.strip()]
    if classes:
        tr = found[0].get("Transitions", []) if found else []
        check(f"backups: the {kind} rule moves objects to one of backup.s3.{kind}.storage_classes ({classes}), a Transition StorageClass S3 accepts, "
              f"within backup.s3.lifecycle_grace_hours ({grace_h} h)",
              len(tr) == 1 and tr[0].get("StorageClass") in classes and tr[0].get("StorageClass") in TRANSITION_CLASSES
              and num(tr[0].get("TransitionInDays")) * 24 < grace_h, tr)
check("backups: the physical kind is kept in Glacier (SPEC): its classes are S3 Glacier classes only",
      set(c.strip() for c in backup_default("backup.s3.physical.storage_classes").split(",")) <= {"GLACIER", "DEEP_ARCHIVE", "GLACIER_IR"})
check("backups: the logical kind is kept 12 weeks and taken weekly (SPEC)",
      num(backup_default("backup.s3.logical.retention_days")) == 84 and num(backup_default("backup.s3.logical.every_hours")) == 168)
bg = functions.get("BackupGuardFunction", {})
check("backups: backup-guard is given the bucket (NBAOPS_BACKUP__S3__BUCKET = BackupBucket)",
      text(env_of("BackupGuardFunction").get("NBAOPS_BACKUP__S3__BUCKET")) == "${BackupBucket}")
s3_stmts = [s for s in statements(bg) if any(str(a).startswith("s3:") for a in as_list(s.get("Action")))]
prefixes = sorted(backup_default(f"backup.s3.{k}.prefix") + "*" for k in ("logical", "wal", "physical"))
# ListObjectsV2 is authorised as s3:ListBucket on the bucket, s3:prefix its Prefix
# (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html).
check("backups: backup-guard's only S3 permission is s3:ListBucket on BackupBucket, for the three kinds' prefixes",
      len(s3_stmts) == 1 and s3_stmts[0].get("Effect") == "Allow" and as_list(s3_stmts[0].get("Action")) == ["s3:ListBucket"]
      and resources_of(s3_stmts) == {"${BackupBucket.Arn}"}
      and sorted(as_list(cond(s3_stmts[0], "StringLike", "s3:prefix"))) == prefixes, s3_stmts)
s3_check = [e for e in bg.get("Properties", {}).get("Events", {}).values()
            if e.get("Type") == "ScheduleV2" and '"task":"backup-s3-check"' in str(e["Properties"].get("Input"))]
check("backups: backup-guard runs backup-s3-check once a day",
      len(s3_check) == 1 and re.fullmatch(r"cron\(\d+ \d+ \* \* \? \*\)", s3_check[0]["Properties"].get("ScheduleExpression", "")), s3_check)

# The producer: every resource under CreatesPgDumpProducer, which needs the switch and an image.
producer = {k: r for k, r in resources.items() if k.startswith("PgDump")}
check("producer: cluster, logs, task definition, three roles and the schedule, all under CreatesPgDumpProducer",
      {r["Type"] for r in producer.values()} == {"AWS::ECS::Cluster", "AWS::Logs::LogGroup", "AWS::ECS::TaskDefinition", "AWS::IAM::Role", "AWS::Scheduler::Schedule"}
      and len([r for r in producer.values() if r["Type"] == "AWS::IAM::Role"]) == 3
      and all(r.get("Condition") == "CreatesPgDumpProducer" for r in producer.values()), sorted(producer))
cp = json.dumps(conditions.get("CreatesPgDumpProducer"), sort_keys=True)
check("producer: CreatesPgDumpProducer = PgDumpProducer is true and PgDumpImage is set; off by default",
      '"Ref": "PgDumpProducer"' in cp and '"Ref": "PgDumpImage"' in cp and "Fn::And" in cp
      and params.get("PgDumpProducer", {}).get("Default") == "false", cp)
td = producer.get("PgDumpTaskDefinition", {}).get("Properties", {})
# Fargate: awsvpc, a CPU/memory pair of the table
# (https://docs.aws.amazon.com/AmazonECS/latest/userguide/task-cpu-memory-error.html), ephemeral
# storage 21-200 GiB (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_EphemeralStorage.html).
FARGATE = {"256": {512, 1024, 2048}, "512": {1024, 2048, 3072, 4096}, "1024": set(range(2048, 8193, 1024)),
           "2048": set(range(4096, 16385, 1024)), "4096": set(range(8192, 30721, 1024))}
storage = params.get("PgDumpStorageGiB", {})
check("producer: a Fargate task definition (awsvpc, a supported CPU/memory pair, ephemeral storage within 21-200 GiB)",
      td.get("RequiresCompatibilities") == ["FARGATE"] and td.get("NetworkMode") == "awsvpc"
      and num(td.get("Memory")) in FARGATE.get(str(td.get("Cpu")), set())
      and text(td.get("EphemeralStorage", {}).get("SizeInGiB")) == "${PgDumpStorageGiB}"
      and num(storage.get("MinValue")) >= 21 and num(storage.get("MaxValue")) <= 200, (td.get("Cpu"), td.get("Memory"), storage))
cont = (td.get("ContainerDefinitions") or [{}])[0]
envs = {e["Name"]: text(e.get("Value")) for e in cont.get("Environment", [])}
cmd = " ".join(str(c) for c in as_list(cont.get("Command", [])))
check("producer: the container runs PgDumpImage, dumps to a file, checks it reads back, and uploads only then, under BACKUP_PREFIX = backup.s3.logical.prefix",
      text(cont.get("Image")) == "${PgDumpImage}" and "set -euo pipefail" in cmd
      and cmd.find("pg_dump") < cmd.find("pg_restore --list") < cmd.find("aws s3 cp") and cmd.find("pg_dump") >= 0
      and "${BACKUP_PREFIX}${day}/" in cmd and envs.get("BACKUP_PREFIX") == backup_default("backup.s3.logical.prefix")
      and envs.get("BACKUP_BUCKET") == "${BackupBucket}", (cmd, envs))
# A Parameter Store secret as a container environment variable: ValueFrom its full ARN
# (https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Secret.html).
dump_param = SSM + "secrets/backup/pg_dump"
check("producer: the password comes from the SecureString secrets/backup/pg_dump (an ECS secret), never the template",
      [(s["Name"], text(s["ValueFrom"])) for s in cont.get("Secrets", [])] == [("PGPASSWORD", dump_param)] and "PGPASSWORD" not in envs)


def role_stmts(key):
    return [s for p in producer.get(key, {}).get("Properties", {}).get("Policies", []) for s in p["PolicyDocument"].get("Statement", [])]


def trusted(key):
    return [s.get("Principal", {}).get("Service") for s in producer.get(key, {}).get("Properties", {}).get("AssumeRolePolicyDocument", {}).get("Statement", [])]


check("producer: the task role may only put objects under the logical prefix (no read, no delete)",
      [(as_list(s.get("Action")), resources_of([s])) for s in role_stmts("PgDumpTaskRole")]
      == [(["s3:PutObject"], {"${BackupBucket.Arn}/" + backup_default("backup.s3.logical.prefix") + "*"})]
      and trusted("PgDumpTaskRole") == ["ecs-tasks.amazonaws.com"], role_stmts("PgDumpTaskRole"))
check("producer: the execution role reads only the dump's password parameter",
      {a for s in role_stmts("PgDumpExecutionRole") for a in as_list(s.get("Action"))} == {"ssm:GetParameters", "kms:Decrypt"}
      and resources_of([s for s in role_stmts("PgDumpExecutionRole") if "ssm:GetParameters" in as_list(s.get("Action"))]) == {dump_param}
      and trusted("PgDumpExecutionRole") == ["ecs-tasks.amazonaws.com"] and text(td.get("ExecutionRoleArn")) == "${PgDumpExecutionRole.Arn}"
      and text(td.get("TaskRoleArn")) == "${PgDumpTaskRole.Arn}")
# Scheduler's role: ecs:RunTask, and iam:PassRole of each role the task uses, passed to ECS tasks
# (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/CWE_IAM_role.html).
sched = role_stmts("PgDumpSchedulerRole")
run = [s for s in sched if as_list(s.get("Action")) == ["ecs:RunTask"]]
pas = [s for s in sched if as_list(s.get("Action")) == ["iam:PassRole"]]
check("producer: the scheduler's role runs only the dump's task family, only in its cluster",
      len(run) == 1 and resources_of(run) == {ARN + ":ecs:${AWS::Region}:${AWS::AccountId}:task-definition/nbaops-${Env}-pg-dump:*"}
      and text(cond(run[0], "ArnEquals", "ecs:cluster")) == "${PgDumpCluster.Arn}"
      and text(td.get("Family")) == "nbaops-${Env}-pg-dump" and trusted("PgDumpSchedulerRole") == ["scheduler.amazonaws.com"], run)
check("producer: the scheduler's role passes exactly the task's execution and task roles, to ecs-tasks.amazonaws.com only",
      len(pas) == 1 and resources_of(pas) == {"${PgDumpExecutionRole.Arn}", "${PgDumpTaskRole.Arn}"}
      and cond(pas[0], "StringEquals", "iam:PassedToService") == "ecs-tasks.amazonaws.com" and len(sched) == 2, pas)
sp = producer.get("PgDumpSchedule", {}).get("Properties", {})
tgt = sp.get("Target", {})
ecs = tgt.get("EcsParameters", {})
net = ecs.get("NetworkConfiguration", {}).get("AwsvpcConfiguration", {})
# EcsParameters: TaskDefinitionArn (required), LaunchType, NetworkConfiguration.AwsvpcConfiguration
# (https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-properties-scheduler-schedule-ecsparameters.html).
check("producer: weekly, on the cluster, with the scheduler's role, one Fargate task in the PostgreSQL subnets and security groups, no public IP",
      re.fullmatch(r"cron\(\d+ \d+ \? \* (SUN|MON|TUE|WED|THU|FRI|SAT|[1-7]) \*\)", sp.get("ScheduleExpression", ""))
      and text(tgt.get("Arn")) == "${PgDumpCluster.Arn}" and text(tgt.get("RoleArn")) == "${PgDumpSchedulerRole.Arn}"
      and text(ecs.get("TaskDefinitionArn")) == "${PgDumpTaskDefinition}" and ecs.get("LaunchType") == "FARGATE"
      and num(ecs.get("TaskCount", 1)) == 1 and text(net.get("Subnets")) == "${PgSubnetIds}"
      and text(net.get("SecurityGroups")) == "${PgSecurityGroupIds}" and net.get("AssignPublicIp") == "DISABLED", sp)

passed, failed = results.count(True), results.count(False)
print(f"template: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
