#!/usr/bin/env python3
"""Least privilege, proved both ways: each function's role allows exactly the IAM actions its code
can call.

Every crate declares `pub const AWS_OPERATIONS: &[&str]` in functions/<crate>/src/aws_operations.rs
(alert-router also `ACK_AWS_OPERATIONS` for its acknowledgement-URL function). This check compares
those consts with the Allow actions of the function's `Policies` in the template:
- an action the role allows that the code never calls fails (dead privilege);
- an action the code calls that the role lacks fails (an AccessDenied in production).
Deny statements are guard rails, not grants, and are not compared. What SAM itself adds to the role
(CloudWatch Logs and X-Ray writes from the managed execution policy, the VPC ENI policy for VpcConfig,
sqs:SendMessage for the OnFailure destination, the SNS/EventBridge/Scheduler invoke permissions) is
not in `Policies` and is deliberately ignored here.

Run by `make infra-lint`; `check_aws_operations.py [TEMPLATE]` checks another file.
Closes with 'aws-operations: N passed, M failed'.
"""
import pathlib
import re
import sys

from cfnlint.decode import decode

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "infra/template.yaml"
template, matches = decode(str(TEMPLATE))
if matches:
    print(f"template does not parse: {matches}")
    sys.exit(1)
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")


def read_consts(path):
    """{const name: [actions]} from a Rust file of `pub const X: &[&str] = &[...]`."""
    if not path.exists():
        return {}
    src = re.sub(r"//[^\n]*", "", path.read_text())
    return {m.group(1): re.findall(r'"([^"]+)"', m.group(2))
            for m in re.finditer(r"pub const (\w+): &\[&str\] = &\[(.*?)\];", src, re.S)}


# What every function's shared path calls (config, guard, ledger, alerts): part of each AWS_OPERATIONS.
RUNTIME = read_consts(ROOT / "shared" / "src" / "aws_operations.rs").get("RUNTIME_AWS_OPERATIONS", [])
check("shared/src/aws_operations.rs declares RUNTIME_AWS_OPERATIONS", RUNTIME)


def consts(crate):
    """{const name: [actions]} of functions/<crate>/src/aws_operations.rs; AWS_OPERATIONS includes
    the shared path's RUNTIME_AWS_OPERATIONS (ACK_AWS_OPERATIONS is complete on its own)."""
    out = read_consts(ROOT / "functions" / crate / "src" / "aws_operations.rs")
    if "AWS_OPERATIONS" in out:
        out["AWS_OPERATIONS"] = sorted(set(out["AWS_OPERATIONS"]) | set(RUNTIME))
    return out


def allowed(fn):
    out = set()
    for p in fn["Properties"].get("Policies", []):
        for s in (p.get("Statement", []) if isinstance(p, dict) else []):
            if s.get("Effect") == "Allow":
                a = s.get("Action")
                out |= set(a if isinstance(a, list) else [a])
    return out


functions = {k: v for k, v in template["Resources"].items() if v.get("Type") == "AWS::Serverless::Function"}
crates = sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "Cargo.toml").exists())
for crate in crates:
    declared = consts(crate)
    check(f"{crate}: src/aws_operations.rs declares AWS_OPERATIONS", "AWS_OPERATIONS" in declared)
    mod_files = [ROOT / "functions" / crate / "src" / f for f in ("lib.rs", "main.rs")]
    check(f"{crate}: aws_operations is a module of the crate (compiled, so it stays valid Rust)",
          any(f.exists() and re.search(r"^\s*(pub\s+)?mod aws_operations;", f.read_text(), re.M) for f in mod_files))
    for key, fn in sorted(functions.items()):
        if str(fn["Properties"].get("CodeUri", "")).rstrip("/") != f"../functions/{crate}":
            continue
        # The one function that serves the public URL of a crate takes the crate's ACK_ const.
        name = "ACK_AWS_OPERATIONS" if "FunctionUrlConfig" in fn["Properties"] and "ACK_AWS_OPERATIONS" in declared else "AWS_OPERATIONS"
        code = set(declared.get(name, []))
        role = allowed(fn)
        check(f"{key}: role allows nothing its code never calls ({name})", not (role - code), sorted(role - code))
        check(f"{key}: role allows everything its code calls ({name})", not (code - role), sorted(code - role))

# The operator's read-only policy grants exactly what the `nbaops` command calls.
OPERATOR = read_consts(ROOT / "cli" / "src" / "aws_operations.rs").get("OPERATOR_AWS_OPERATIONS", [])
check("cli/src/aws_operations.rs declares OPERATOR_AWS_OPERATIONS", OPERATOR)
policy = template["Resources"].get("OperatorReadOnlyPolicy", {})
check("OperatorReadOnlyPolicy is an AWS::IAM::ManagedPolicy", policy.get("Type") == "AWS::IAM::ManagedPolicy")
granted = set()
for s in policy.get("Properties", {}).get("PolicyDocument", {}).get("Statement", []):
    if s.get("Effect") == "Allow":
        a = s.get("Action")
        granted |= set(a if isinstance(a, list) else [a])
check("OperatorReadOnlyPolicy: grants nothing the command never calls", not (granted - set(OPERATOR)), sorted(granted - set(OPERATOR)))
check("OperatorReadOnlyPolicy: grants everything the command calls", not (set(OPERATOR) - granted), sorted(set(OPERATOR) - granted))
READ_VERBS = ("Describe", "Get", "List", "Query", "Decrypt")
check("OperatorReadOnlyPolicy: read-only verbs only", all(a.split(":")[1].startswith(READ_VERBS) for a in granted),
      sorted(a for a in granted if not a.split(":")[1].startswith(READ_VERBS)))
# `nbaops approve`/`deny`: its own policy grants exactly its writes, scoped.
APPROVE = read_consts(ROOT / "cli" / "src" / "aws_operations.rs").get("APPROVE_AWS_OPERATIONS", [])
check("cli/src/aws_operations.rs declares APPROVE_AWS_OPERATIONS", APPROVE)
approve = template["Resources"].get("OperatorApprovePolicy", {})
check("OperatorApprovePolicy is an AWS::IAM::ManagedPolicy", approve.get("Type") == "AWS::IAM::ManagedPolicy")
ap_stmts = [s for s in approve.get("Properties", {}).get("PolicyDocument", {}).get("Statement", []) if s.get("Effect") == "Allow"]
ap_granted = {a for s in ap_stmts for a in (s.get("Action") if isinstance(s.get("Action"), list) else [s.get("Action")])}
check("OperatorApprovePolicy: grants nothing the command never calls", not (ap_granted - set(APPROVE)), sorted(ap_granted - set(APPROVE)))
check("OperatorApprovePolicy: grants everything the command calls", not (set(APPROVE) - ap_granted), sorted(set(APPROVE) - ap_granted))
for s in ap_stmts:
    acts = s.get("Action") if isinstance(s.get("Action"), list) else [s.get("Action")]
    if "dynamodb:PutItem" in acts:
        keys = (s.get("Condition") or {}).get("ForAllValues:StringLike", {}).get("dynamodb:LeadingKeys")
        check("OperatorApprovePolicy: ledger writes only to approval and audit partitions (dynamodb:LeadingKeys)",
              keys == [{"Fn::Sub": "approval#${Env}"}, "audit#*"], keys)
    if "iam:PassRole" in acts:
        check("OperatorApprovePolicy: PassRole only to scheduler.amazonaws.com",
              (s.get("Condition") or {}).get("StringEquals", {}).get("iam:PassedToService") == "scheduler.amazonaws.com", s)
check("cli: aws_operations is a module of the crate",
      any(re.search(r"^\s*(pub )?mod aws_operations;", (ROOT / "cli/src" / f).read_text(), re.M)
          for f in ("lib.rs", "main.rs") if (ROOT / "cli/src" / f).exists()))

passed, failed = results.count(True), results.count(False)
print(f"aws-operations: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
