#!/usr/bin/env python3
"""The fleet's member template (issue #20), infra/member-role.yaml, against the code and the hub.

- The member role allows exactly the member-side operations: the operations of the services a
  member's clients call there (shared/src/aws_operations.rs MEMBER_SERVICES) in the AWS_OPERATIONS
  of the functions that act on a member's records (FLEET_FUNCTIONS), both ways: nothing the code
  never calls there, nothing it calls there missing.
- Its trust admits the hub account only with the external id (condition key sts:ExternalId,
  https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_iam-condition-keys.html#ck_externalid),
  and mutations require nbaops:env=<env>, with nbaops:protect=true denied.
- The role is created in one region only (IAM is global; a StackSet instance per region would
  collide otherwise); the forwarding rules in every region target the hub's bus ARN with a role
  allowing only events:PutEvents on it
  (https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cross-account.html).
- The hub (infra/template.yaml): each fleet function may sts:AssumeRole exactly the member role's
  name in any account, the others may not; the default bus admits the FleetMemberAccounts.

Run by `make infra-lint`. Closes with 'member-role: N passed, M failed'.
"""
import pathlib
import re
import sys

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")


def load(path):
    t, matches = decode(str(path))
    if matches:
        print(f"{path} does not parse: {matches}")
        sys.exit(1)
    return t


def read_consts(path):
    src = re.sub(r"//[^\n]*", "", path.read_text())
    return {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
            for m in re.finditer(r"pub const (\w+): &\[&str\] = &\[(.*?)\];", src, re.S)}


def as_list(x):
    return x if isinstance(x, list) else [x]


def statements(doc):
    return as_list((doc or {}).get("Statement", []))


def actions(stmts, effect="Allow"):
    return {a for s in stmts if s.get("Effect") == effect for a in as_list(s.get("Action"))}


member = load(ROOT / "infra/member-role.yaml")
hub = load(ROOT / "infra/template.yaml")
shared = read_consts(ROOT / "shared/src/aws_operations.rs")
FLEET = shared.get("FLEET_FUNCTIONS", [])
SERVICES = set(shared.get("MEMBER_SERVICES", []))
check("shared/src/aws_operations.rs declares FLEET_FUNCTIONS and MEMBER_SERVICES", FLEET and SERVICES)

member_ops = set()
for crate in FLEET:
    own = read_consts(ROOT / "functions" / crate / "src/aws_operations.rs").get("AWS_OPERATIONS", [])
    check(f"{crate}: declares sts:AssumeRole (it may act in a member)", "sts:AssumeRole" in own)
    member_ops |= {a for a in own if a.split(":")[0] in SERVICES}
check("the member-side operations are derived (non-empty)", len(member_ops) > 5, sorted(member_ops))

res = member["Resources"]
role = res.get("MemberRole", {})
props = role.get("Properties", {})
check("MemberRole is an IAM role named nbaops-member-<env>",
      role.get("Type") == "AWS::IAM::Role" and props.get("RoleName") == {"Fn::Sub": "nbaops-member-${Env}"},
      props.get("RoleName"))
check("MemberRole is created in RoleRegion only (IAM is global)", role.get("Condition") == "CreateRole")
check("CreateRole is AWS::Region == RoleRegion",
      member.get("Conditions", {}).get("CreateRole") == {"Fn::Equals": [{"Ref": "AWS::Region"}, {"Ref": "RoleRegion"}]})
granted = set()
role_stmts = []
for p in props.get("Policies", []):
    role_stmts += statements(p.get("PolicyDocument"))
granted = actions(role_stmts)
check("MemberRole allows nothing the fleet functions never call in a member", not (granted - member_ops),
      sorted(granted - member_ops))
check("MemberRole allows everything the fleet functions call in a member", not (member_ops - granted),
      sorted(member_ops - granted))
trust = statements(props.get("AssumeRolePolicyDocument"))
check("trust: one statement, sts:AssumeRole by the hub account",
      len(trust) == 1 and trust[0].get("Action") == "sts:AssumeRole"
      and trust[0].get("Principal") == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${HubAccountId}:root"}},
      trust)
check("trust: requires the external id (StringEquals sts:ExternalId = ExternalId)",
      trust and (trust[0].get("Condition") or {}).get("StringEquals", {}).get("sts:ExternalId") == {"Ref": "ExternalId"},
      trust and trust[0].get("Condition"))
check("ExternalId is NoEcho", member["Parameters"].get("ExternalId", {}).get("NoEcho") is True)
MUTATING = {a for a in member_ops if a.split(":")[1].startswith(("Set", "Update", "Modify", "Stop", "Start"))}
for s in role_stmts:
    acts = set(as_list(s.get("Action")))
    if s.get("Effect") == "Allow" and acts & MUTATING:
        check(f"{s.get('Sid')}: changes only resources tagged nbaops:env=<env>",
              (s.get("Condition") or {}).get("StringEquals", {}).get("aws:ResourceTag/nbaops:env") == {"Ref": "Env"},
              s.get("Condition"))
deny = actions(role_stmts, "Deny")
check("every mutation is denied on nbaops:protect=true", MUTATING <= deny, sorted(MUTATING - deny))

BUS = {"Fn::Sub": "arn:${AWS::Partition}:events:${HubRegion}:${HubAccountId}:event-bus/${HubEventBusName}"}
fwd = res.get("ForwardRole", {}).get("Properties", {})
fwd_stmts = [s for p in fwd.get("Policies", []) for s in statements(p.get("PolicyDocument"))]
check("ForwardRole: events:PutEvents on the hub's bus only",
      actions(fwd_stmts) == {"events:PutEvents"} and all(s.get("Resource") == BUS for s in fwd_stmts), fwd_stmts)
check("ForwardRole: assumed by events.amazonaws.com only",
      [s.get("Principal") for s in statements(fwd.get("AssumeRolePolicyDocument"))] == [{"Service": "events.amazonaws.com"}])
check("ForwardRole: one per region (its name carries the region)", "${AWS::Region}" in str(fwd.get("RoleName")))
rules = {k: v["Properties"] for k, v in res.items() if v.get("Type") == "AWS::Events::Rule"}
patterns = {k: (r["EventPattern"].get("source"), r["EventPattern"].get("detail-type")) for k, r in rules.items()}
check("a rule forwards CloudWatch alarm state changes",
      (["aws.cloudwatch"], ["CloudWatch Alarm State Change"]) in patterns.values(), patterns)
check("a rule forwards RDS events (detail-type RDS DB ...)",
      (["aws.rds"], [{"prefix": "RDS DB "}]) in patterns.values(), patterns)
check("no other rule", len(rules) == 2, sorted(rules))
for k, r in rules.items():
    check(f"{k}: its one target is the hub's bus, through ForwardRole",
          [(t.get("Arn"), t.get("RoleArn")) for t in r.get("Targets", [])] == [(BUS, {"Fn::GetAtt": ["ForwardRole", "Arn"]})],
          r.get("Targets"))

# The hub: who may assume the member role, and the bus policy.
MEMBER_ROLE = {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/nbaops-member-${Env}"}
fleet_keys = set()
for key, fn in hub["Resources"].items():
    if fn.get("Type") != "AWS::Serverless::Function":
        continue
    name = str(fn["Properties"].get("FunctionName", {}).get("Fn::Sub", "")).replace("nbaops-${Env}-", "")
    stmts = [s for p in fn["Properties"].get("Policies", []) if isinstance(p, dict) for s in statements(p)]
    assume = [s for s in stmts if s.get("Effect") == "Allow" and "sts:AssumeRole" in as_list(s.get("Action"))]
    if name in FLEET and "FunctionUrlConfig" not in fn["Properties"]:
        fleet_keys.add(key)
        check(f"{key}: sts:AssumeRole on the member role only", [s.get("Resource") for s in assume] == [MEMBER_ROLE],
              [s.get("Resource") for s in assume])
    else:
        check(f"{key}: never assumes a member role", not assume, assume)
check("every fleet function is in the template", len(fleet_keys) == len(FLEET), sorted(fleet_keys))
bus = hub["Resources"].get("FleetMembersPutEvents", {})
bp = bus.get("Properties", {})
check("the hub's default bus admits the FleetMemberAccounts (events:PutEvents), when there are any",
      bus.get("Type") == "AWS::Events::EventBusPolicy" and bus.get("Condition") == "HasFleetMembers"
      and bp.get("EventBusName") == "default"
      and bp.get("Statement", {}).get("Principal") == {"AWS": {"Ref": "FleetMemberAccounts"}}
      and bp.get("Statement", {}).get("Action") == "events:PutEvents", bp)

print(f"member-role: {sum(results)} passed, {len(results) - sum(results)} failed")
sys.exit(0 if all(results) else 1)
