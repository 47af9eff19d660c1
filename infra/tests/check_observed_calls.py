#!/usr/bin/env python3
"""The declared operations are the real ones: every AWS call a function binary made during the
end-to-end suite (moto's request recordings, kept by the harness when NBAOPS_AWS_CALLS_DIR is set;
each function process signs its requests with the user agent `app/<function>`) must be in the
`AWS_OPERATIONS` its crate declares (functions/<crate>/src/aws_operations.rs) — the list that
check_aws_operations.py holds the template's role to. A call made but not declared would be an
AccessDenied in a real account.

Usage: check_observed_calls.py DIR. Closes with 'observed-calls: N passed, M failed'.
"""
import base64
import json
import pathlib
import re
import sys
from collections import defaultdict
from urllib.parse import parse_qs

ROOT = pathlib.Path(__file__).resolve().parents[2]
# SigV4 signing name -> IAM service prefix, where they differ. The Resource Groups Tagging API
# signs as "tagging" and is authorised under the prefix "tag" (service prefix of
# https://docs.aws.amazon.com/service-authorization/latest/reference/list_resourcegroupstaggingapi.html).
IAM_PREFIX = {"monitoring": "cloudwatch", "tagging": "tag"}
# Batch calls authorised as their single-message action: "SendMessageBatch ... the permission
# SendMessage" (https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-api-permissions-reference.html).
AUTHORISED_AS = {"sqs:SendMessageBatch": "sqs:SendMessage", "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
                 "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility"}


def declared(crate):
    path = ROOT / "functions" / crate / "src" / "aws_operations.rs"
    if crate == "nbaops":
        # The operator's command (app/nbaops): no function's shared path.
        src = re.sub(r"//[^\n]*", "", (ROOT / "cli" / "src" / "aws_operations.rs").read_text())
        # The operator's command: its read-only list, and what `nbaops approve`/`deny` adds.
        return {op for m in re.finditer(r"pub const (?:OPERATOR|APPROVE)_AWS_OPERATIONS: &\[&str\] = &\[(.*?)\];", src, re.S)
                for op in re.findall(r'"([^"]+)"', m.group(1))}
    if not path.exists():
        return None
    src = re.sub(r"//[^\n]*", "", path.read_text())
    out = set()
    for m in re.finditer(r"pub const (\w+): &\[&str\] = &\[(.*?)\];", src, re.S):
        out |= set(re.findall(r'"([^"]+)"', m.group(2)))
    # Plus what every function's shared path calls (shared/src/aws_operations.rs's
    # RUNTIME_AWS_OPERATIONS; its other consts are lists of functions and services, issue #20).
    shared = re.sub(r"//[^\n]*", "", (ROOT / "shared" / "src" / "aws_operations.rs").read_text())
    for m in re.finditer(r"pub const (RUNTIME_AWS_OPERATIONS): &\[&str\] = &\[(.*?)\];", shared, re.S):
        out |= set(re.findall(r'"([^"]+)"', m.group(2)))
    return out


def operation(entry):
    h = {k.lower(): v for k, v in entry.get("headers", {}).items()}
    ua = h.get("x-amz-user-agent", "") + " " + h.get("user-agent", "")
    app = re.search(r"\bapp/([\w.-]+)", ua)
    scope = re.search(r"Credential=[^/]+/\d+/[^/]+/([^/]+)/aws4_request", h.get("authorization", ""))
    if not app or not scope:
        return None
    service = IAM_PREFIX.get(scope.group(1), scope.group(1))
    target = h.get("x-amz-target")
    if target and target.endswith(".TransactWriteItems"):
        # Not an IAM action of its own: each item is authorised as the single-item operation it is
        # (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/transaction-apis-iam.html).
        body = entry.get("body") or ""
        if entry.get("body_encoded"):
            body = base64.b64decode(body).decode("utf-8", "replace")
        kinds = {"Put": "PutItem", "Delete": "DeleteItem", "Update": "UpdateItem", "ConditionCheck": "ConditionCheckItem"}
        ops = sorted({f"{service}:{kinds.get(k, '?' + k)}" for item in json.loads(body).get("TransactItems", []) for k in item})
        return app.group(1), ops
    if target:
        op = f"{service}:{target.rsplit('.', 1)[-1]}"
        return app.group(1), AUTHORISED_AS.get(op, op)
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode("utf-8", "replace")
    action = parse_qs(body).get("Action", [None])[0]
    url = entry.get("url") or ""
    rpc = re.search(r"/service/[^/]+/operation/(\w+)", url)
    if not action and rpc:
        # Smithy RPC v2 (CBOR): the operation is the last path segment.
        action = rpc.group(1)
    if not action and service == "scheduler":
        # EventBridge Scheduler is REST-JSON: the method and path name the operation
        # (https://docs.aws.amazon.com/scheduler/latest/APIReference/API_Operations.html).
        path = re.sub(r"^https?://[^/]+", "", url).split("?")[0]
        rest = {("POST", "schedules"): "CreateSchedule", ("DELETE", "schedules"): "DeleteSchedule",
                ("GET", "schedules"): "GetSchedule", ("PUT", "schedules"): "UpdateSchedule"}
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2:
            action = rest.get((entry.get("method", "").upper(), parts[0]))
        elif parts == ["schedules"] and entry.get("method", "").upper() == "GET":
            action = "ListSchedules"
    if not action and service == "s3" and entry.get("method", "").upper() == "GET" and "list-type=2" in url.split("?", 1)[-1].split("&"):
        # S3 is REST-XML: ListObjectsV2 (GET /<bucket>?list-type=2) is authorised as s3:ListBucket
        # (https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html).
        action = "ListBucket"
    return (app.group(1), f"{service}:{action}") if action else (app.group(1), f"{service}:?{entry.get('method')} {entry.get('url')}")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    files = sorted(pathlib.Path(sys.argv[1]).glob("*.jsonl"))
    seen = defaultdict(lambda: defaultdict(int))
    for f in files:
        for line in f.read_text().splitlines():
            try:
                op = operation(json.loads(line))
            except (ValueError, KeyError):
                continue
            if op:
                for one in (op[1] if isinstance(op[1], list) else [op[1]]):
                    seen[op[0]][one] += 1
    results = []

    def check(name, ok, detail=""):
        results.append(bool(ok))
        print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")

    check(f"recordings found ({len(files)} servers)", files and seen, sys.argv[1])
    for app in sorted(seen):
        want = declared(app)
        if want is None:
            # Harness stand-ins (fake-echo) are not functions.
            print(f"     {app}: not a function crate, {sum(seen[app].values())} call(s) ignored")
            continue
        extra = sorted(set(seen[app]) - want)
        check(f"{app}: {len(seen[app])} distinct operation(s), {sum(seen[app].values())} call(s), all declared",
              not extra, f"called but not in aws_operations.rs: {extra}")
        unseen = sorted(want - set(seen[app]) - {"kms:Decrypt", "kms:GenerateDataKey"})
        if unseen:
            print(f"     {app}: declared, not exercised by the suite: {', '.join(unseen)}")
    passed, failed = results.count(True), results.count(False)
    print(f"observed-calls: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
