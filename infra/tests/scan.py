#!/usr/bin/env python3
"""Scanners over the deployed shape of the template, offline.

Both templates nbaops deploys: infra/template.yaml (the hub, SAM) and infra/member-role.yaml (each
fleet member's role and forwarding rules, issue #20, plain CloudFormation).
1. aws-sam-translator turns the SAM template into the plain CloudFormation SAM would deploy
   (no network: a region and fake credentials only satisfy the SDK defaults; CodeUri becomes a
   placeholder S3 location, as `sam package` would make it); a template without the SAM
   transform is scanned as it is.
2. checkov (--framework cloudformation) scans that CloudFormation.
3. parliament lints every IAM policy document in it (role inline policies, managed policies; not
   trust policies, which it reads as malformed identity policies: check_member_role.py checks the
   member role's trust).

Any failed finding fails the run unless infra/scan-skips.yaml lists it with a reason (one file for
both tools). A skip that no longer matches anything fails too, so the file cannot rot.
Runs with .venv-scan/bin/python (scripts/setup-scan.sh). `scan.py [TEMPLATE...]` scans other files.
"""
import copy
import fnmatch
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-scan" / "bin"
TEMPLATES = [pathlib.Path(a) for a in sys.argv[1:]] or [ROOT / "infra/template.yaml", ROOT / "infra/member-role.yaml"]
REGION, ACCOUNT = "us-east-1", "123456789012"
for k, v in {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "AWS_ACCESS_KEY_ID": "scan",
             "AWS_SECRET_ACCESS_KEY": "scan", "AWS_EC2_METADATA_DISABLED": "true"}.items():
    os.environ.setdefault(k, v)

from samtranslator.parser.parser import Parser  # noqa: E402
from samtranslator.translator.translator import Translator  # noqa: E402
from samtranslator.yaml_helper import yaml_parse  # noqa: E402
from parliament import analyze_policy_string  # noqa: E402

started = time.monotonic()
skips = yaml.safe_load((ROOT / "infra/scan-skips.yaml").read_text()) or {}
skip_list = skips.get("skips", [])
bad = [s for s in skip_list if not str(s.get("reason", "")).strip() or not s.get("tool") or not s.get("id")]
if bad:
    print(f"scan: every skip needs tool, id and a reason: {bad}")
    sys.exit(1)
used = set()


def skipped(tool, finding_id, resource):
    for i, s in enumerate(skip_list):
        if s["tool"] == tool and s["id"] == finding_id and fnmatch.fnmatch(resource, s.get("resource", "*")):
            used.add(i)
            return True
    return False


import logging  # noqa: E402
logging.disable(logging.WARNING)  # the translator's feature-toggle chatter
out_dir = pathlib.Path(tempfile.mkdtemp(prefix="nbaops-scan-"))
failures = []
parliament_findings = 0

# Policy documents as deployed (parliament, 3.): intrinsics resolved to sample values.
SAMPLE = {"AWS::Partition": "aws", "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com",
          "AWS::StackName": "nbaops-dev", "AWS::NoValue": None}


def physical(logical, attr=None):
    r = res.get(logical, {})
    t, p = r.get("Type", ""), r.get("Properties", {})
    name = {"AWS::SNS::Topic": "TopicName", "AWS::SQS::Queue": "QueueName", "AWS::DynamoDB::Table": "TableName",
            "AWS::S3::Bucket": "BucketName", "AWS::KinesisFirehose::DeliveryStream": "DeliveryStreamName",
            "AWS::Lambda::Function": "FunctionName"}.get(t)
    n = resolve(p.get(name)) if name and p.get(name) else logical.lower()
    arn = {"AWS::SNS::Topic": f"arn:aws:sns:{REGION}:{ACCOUNT}:{n}",
           "AWS::SQS::Queue": f"arn:aws:sqs:{REGION}:{ACCOUNT}:{n}",
           "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{n}",
           "AWS::S3::Bucket": f"arn:aws:s3:::{n}",
           "AWS::KinesisFirehose::DeliveryStream": f"arn:aws:firehose:{REGION}:{ACCOUNT}:deliverystream/{n}",
           "AWS::KMS::Key": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/00000000-0000-0000-0000-000000000000",
           "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{n}",
           "AWS::IAM::Role": f"arn:aws:iam::{ACCOUNT}:role/{n}"}.get(t, f"arn:aws:scan:{REGION}:{ACCOUNT}:{n}")
    if attr is None:  # what Ref returns
        if t == "AWS::Lambda::Alias":
            return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{logical.lower()}:{resolve(p.get('Name'))}"
        return {"AWS::SNS::Topic": arn, "AWS::SQS::Queue": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{n}"}.get(t, n)
    return arn if attr == "Arn" else n


def sub(s, extra=None):
    out, i = "", 0
    while i < len(s):
        j = s.find("${", i)
        if j < 0:
            return out + s[i:]
        k = s.index("}", j)
        out += s[i:j]
        var = s[j + 2:k]
        if extra and var in extra:
            out += str(resolve(extra[var]))
        elif var in SAMPLE:
            out += SAMPLE[var]
        elif var in param_values:
            out += str(param_values[var])
        elif var in cfn.get("Parameters", {}):
            out += str(cfn["Parameters"][var].get("Default", var))
        elif "." in var:
            out += physical(*var.split(".", 1))
        else:
            out += physical(var)
        i = k + 1
    return out


def resolve(v):
    if isinstance(v, list):
        return [resolve(x) for x in v if resolve(x) is not None]
    if not isinstance(v, dict):
        return v
    if len(v) == 1:
        (k, x), = v.items()
        if k == "Ref":
            return SAMPLE.get(x) if x in SAMPLE else param_values.get(x, cfn.get("Parameters", {}).get(x, {}).get("Default")) \
                if x in param_values or x in cfn.get("Parameters", {}) else physical(x)
        if k == "Fn::Sub":
            return sub(x) if isinstance(x, str) else sub(x[0], x[1])
        if k == "Fn::GetAtt":
            a = x if isinstance(x, list) else x.split(".", 1)
            return physical(a[0], a[1])
        if k == "Fn::If":
            return resolve(x[1])
        if k == "Fn::Join":
            return x[0].join(str(resolve(p)) for p in x[1])
    return {k: resolve(x) for k, x in v.items()}



for TEMPLATE in TEMPLATES:
    # ---------------------------------------------------------------- 1. SAM -> CloudFormation
    sam = yaml_parse(TEMPLATE.read_text())
    for r in sam["Resources"].values():
        if r.get("Type") == "AWS::Serverless::Function":
            r["Properties"]["CodeUri"] = "s3://nbaops-scan-placeholder/function.zip"
    param_values = {"Env": "dev"}
    for name, p in sam.get("Parameters", {}).items():
        if "Default" not in p and name not in param_values:
            param_values[name] = ("subnet-0scan,subnet-1scan" if p["Type"].startswith("List<")
                                  else "210987654321" if name.endswith("AccountId")
                                  else "us-west-2" if name.endswith("Region")
                                  else f"scan-{name.lower()}")
    transforms = sam.get("Transform", [])
    if "AWS::Serverless-2016-10-31" in (transforms if isinstance(transforms, list) else [transforms]):
        cfn = Translator(managed_policy_map={}, sam_parser=Parser()).translate(sam_template=copy.deepcopy(sam), parameter_values=param_values)
        how = "SAM transform"
    else:
        cfn = sam
        how = "CloudFormation as written"
    cfn_path = out_dir / f"{TEMPLATE.stem}.cfn.json"
    cfn_path.write_text(json.dumps(cfn, indent=1, default=str))
    print(f"scan: {TEMPLATE.name}: {how} -> {len(cfn['Resources'])} CloudFormation resources ({cfn_path})")

    # ---------------------------------------------------------------- 2. checkov
    proc = subprocess.run([str(VENV / "checkov"), "-f", str(cfn_path), "--framework", "cloudformation", "-o", "json",
                           "--compact", "--skip-download"], capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        print(f"scan: checkov did not report JSON (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        sys.exit(1)
    reports = report if isinstance(report, list) else [report]
    checkov_failed = [c for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    checkov_passed = sum(len(r.get("results", {}).get("passed_checks", [])) for r in reports)
    for c in checkov_failed:
        resource = c.get("resource", "?")
        if not skipped("checkov", c["check_id"], resource):
            failures.append(f"checkov {c['check_id']} {resource}: {c.get('check_name')}")
    print(f"scan: {TEMPLATE.name}: checkov {checkov_passed} passed, {len(checkov_failed)} failed before skips")

    # ---------------------------------------------------------------- 3. parliament on every IAM policy
    res = cfn["Resources"]
    documents = []
    findings_before = parliament_findings
    for logical, r in res.items():
        p = r.get("Properties", {})
        if r.get("Type") == "AWS::IAM::Role":
            for pol in p.get("Policies", []):
                documents.append((f"{logical}/{pol.get('PolicyName')}", pol["PolicyDocument"]))
        elif r.get("Type") in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            documents.append((logical, p["PolicyDocument"]))
    for where, doc in documents:
        doc = resolve(doc)
        doc.setdefault("Version", "2012-10-17")
        policy = analyze_policy_string(json.dumps(doc), include_community_auditors=False)
        for f in policy.findings:
            parliament_findings += 1
            if not skipped("parliament", f.issue, where):
                failures.append(f"parliament {f.issue} {where}: {f.detail} {f.location}")
    print(f"scan: {TEMPLATE.name}: parliament {len(documents)} policy documents, {parliament_findings - findings_before} findings before skips")

for i, s in enumerate(skip_list):
    if i not in used:
        failures.append(f"stale skip (matches nothing any more): {s}")
for f in failures:
    print(f"FAIL {f}")
print(f"scan: {len(failures)} failed, {len(used)} skipped with a reason, {time.monotonic() - started:.0f} s")
sys.exit(1 if failures else 0)
