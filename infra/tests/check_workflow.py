#!/usr/bin/env python3
"""The delivery pipeline keeps its promises (.github/workflows/*.yml):

- every `uses:` is pinned by a full 40-hex commit SHA (a tag can be moved; a SHA cannot);
- the workflow default is read-only; `id-token: write` (OIDC to AWS) only on deploy jobs;
- tools are pinned (SAM CLI, cargo-deny, cargo-lambda);
- production creates its change set in one job and executes it, after an approval, in another;
- every job that changes a stack then runs the post-deploy verification (SPEC 5.1), which invokes
  every function with a "not for me" event and a plan and fails on a FunctionError.

Run by `make infra-lint`; `check_workflow.py [WORKFLOW_DIR]` checks another directory.
Closes with 'workflow: N passed, M failed'.
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
WF_DIR = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / ".github/workflows"
VERIFY = ROOT / "infra/tests/post_deploy_verify.sh"
results = []


def check(name, ok, detail=""):
    results.append(bool(ok))
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")


def perms(p):
    return {} if p is None else ({"*": p} if isinstance(p, str) else p)


def run_text(job):
    return "\n".join(str(s.get("run", "")) for s in job.get("steps", []))


files = sorted(list(WF_DIR.glob("*.yml")) + list(WF_DIR.glob("*.yaml")))
check("workflows exist", files, WF_DIR)
for f in files:
    wf = yaml.safe_load(f.read_text())
    jobs = wf.get("jobs", {})
    top = perms(wf.get("permissions"))
    check(f"{f.name}: default permissions are declared and read-only",
          "permissions" in wf and all(v in ("read", "none") for v in top.values()) and top.get("*") not in ("write-all",), top)
    for name, job in jobs.items():
        for i, step in enumerate(job.get("steps", [])):
            uses = step.get("uses")
            if uses is None or uses.startswith("./"):
                continue
            pinned = re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", uses) or re.fullmatch(r"docker://.+@sha256:[0-9a-f]{64}", uses)
            check(f"{f.name}: {name} step {i} pins {uses.split('@')[0]} by commit SHA", pinned, uses)
        text = run_text(job)
        deploys = "sam deploy" in text or "execute-change-set" in text
        oidc = perms(job.get("permissions")).get("id-token") == "write"
        if oidc:
            check(f"{f.name}: {name} has id-token: write only because it deploys", deploys)
        for m in re.finditer(r"pip install ([^\n]*)", text):
            for pkg in ("aws-sam-cli", "cargo-lambda"):
                if pkg in m.group(1):
                    check(f"{f.name}: {name} pins {pkg}", re.search(rf'{pkg}==(\d|\$)', m.group(1)), m.group(0))
        if "cargo install" in text and "cargo-deny" in text:
            check(f"{f.name}: {name} pins cargo-deny", re.search(r"cargo install[^\n]*cargo-deny[^\n]*--version", text))
        # A job that changes a stack: sam deploy that executes, or execute-change-set.
        changes_stack = "execute-change-set" in text or any(
            "sam deploy" in line and "--no-execute-changeset" not in line for line in text.splitlines())
        if changes_stack:
            steps = [str(s.get("run", "")) for s in job.get("steps", [])]
            last_change = max(i for i, s in enumerate(steps) if "execute-change-set" in s or ("sam deploy" in s and "--no-execute-changeset" not in s))
            check(f"{f.name}: {name} runs the post-deploy verification after deploying",
                  any("post_deploy_verify.sh" in s for s in steps[last_change + 1:]))
        if "--config-env prod" in text:
            check(f"{f.name}: {name} only creates the production change set (--no-execute-changeset)",
                  all("--no-execute-changeset" in line for line in text.splitlines() if "--config-env prod" in line))
            check(f"{f.name}: {name} never skips the change-set confirmation silently", "--no-confirm-changeset" not in text)
            executors = [n for n, j in jobs.items() if "execute-change-set" in run_text(j)
                         and name in ([j["needs"]] if isinstance(j.get("needs"), str) else j.get("needs", [])) and j.get("environment")]
            check(f"{f.name}: the production change set is executed in a separate, approved job after it is created", executors)
    for name, job in jobs.items():
        if "prod" in str(job.get("environment", "")) and ("sam deploy" in run_text(job) or "execute-change-set" in run_text(job)):
            check(f"{f.name}: {name} (production) one at a time, never cancelled",
                  isinstance(job.get("concurrency"), dict) and job["concurrency"].get("cancel-in-progress") is False)

v = VERIFY.read_text() if VERIFY.exists() else ""
check("post_deploy_verify.sh invokes every function with events/not-for-me/empty-object.json", "events/not-for-me/empty-object.json" in v and "for fn in $FUNCTIONS" in v)
check("post_deploy_verify.sh fails on a FunctionError", "FunctionError" in v and "exit 1" in v)
check("post_deploy_verify.sh runs a plan (dry-run for acting tasks)", "dry-run-plan" in v and '"outcome":"acted"' in v)
fn_names = set(re.findall(r"FunctionName: !Sub nbaops-\$\{Env\}-([a-z-]+)", (ROOT / "infra/template.yaml").read_text()))
listed = set(re.search(r'FUNCTIONS="([^"]*)"', v).group(1).split()) if 'FUNCTIONS="' in v else set()
check("post_deploy_verify.sh covers every function of the template", fn_names and fn_names == listed, sorted(fn_names ^ listed))

passed, failed = results.count(True), results.count(False)
print(f"workflow: {passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
