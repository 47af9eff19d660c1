#!/usr/bin/env python3
# Rebuilds events/cloudwatch-logs/ (the payload CloudWatch Logs delivers, base64 of gzip, and its
# decoded JSON beside it) and the refused events/not-for-me/cloudwatch-logs-*.json. Run from the
# repository root: python3 scripts/make-cloudwatch-logs-fixtures.py (docs/pg-logs.md).
import json, gzip, base64, datetime
def ms(s):
    return int(datetime.datetime.strptime(s, "%Y-%m-%d %H:%M:%S").replace(tzinfo=datetime.timezone.utc).timestamp()*1000)
lines = [
 ("2026-11-30 03:12:45", "::@:[21877]:ERROR:  canceling autovacuum task"),
 ("2026-11-30 03:12:45", "::@:[21877]:CONTEXT:  while scanning block 18342 of relation \"public.player_stats\"\n\tautomatic vacuum of table \"app.public.player_stats\""),
 ("2026-11-30 03:13:10", "::@:[21902]:LOG:  automatic vacuum of table \"app.public.games\": index scans: 1\n\tpages: 0 removed, 1204 remain, 1204 scanned (100.00% of total)\n\ttuples: 5210 removed, 80211 remain, 0 are dead but not yet removable"),
 ("2026-11-30 03:13:31", "::@:[21940]:ERROR:  canceling autovacuum task"),
 ("2026-11-30 03:13:31", "::@:[21940]:CONTEXT:  automatic vacuum of table \"app.public.player_stats\""),
 ("2026-11-30 03:14:02", "10.0.1.23(51234):app_user@app:[22100]:WARNING:  database \"app\" must be vacuumed within 10985967 transactions"),
 ("2026-11-30 03:14:20", "::@:[21955]:LOG:  automatic aggressive vacuum to prevent wraparound of table \"app.public.seasons\": index scans: 0"),
 ("2026-11-30 03:15:05", "::@:[21990]:ERROR:  could not truncate file \"base/16400/16523\" to 0 blocks: Permission denied"),
 ("2026-11-30 03:15:05", "::@:[21990]:CONTEXT:  automatic vacuum of table \"app.public.lineups\""),
]
events = []
base = 37982319430017384719275016498713650176451298461700000000
for i,(t,rest) in enumerate(lines):
    events.append({"id": str(base + i*17 + 3), "timestamp": ms(t), "message": f"{t} UTC:{rest}"})
doc = {
 "messageType": "DATA_MESSAGE",
 "owner": "123456789012",
 "logGroup": "/aws/rds/instance/nbaops-dev-db/postgresql",
 "logStream": "nbaops-dev-db.0",
 "subscriptionFilters": ["nbaops-dev-pg-vacuum-failures"],
 "logEvents": events,
}
def enc(d):
    raw = json.dumps(d, separators=(",", ":")).encode()
    return base64.b64encode(gzip.compress(raw, mtime=0)).decode()
json.dump(doc, open("events/cloudwatch-logs/decoded/rds-postgresql-autovacuum.json","w"), indent=2); open("events/cloudwatch-logs/decoded/rds-postgresql-autovacuum.json","a").write("\n")
json.dump({"awslogs":{"data":enc(doc)}}, open("events/cloudwatch-logs/rds-postgresql-autovacuum.json","w"), indent=2); open("events/cloudwatch-logs/rds-postgresql-autovacuum.json","a").write("\n")
ctl = {"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":ms("2026-11-30 02:00:00"),"message":"CWL CONTROL MESSAGE: Checking health of destination Lambda function."}]}
w = lambda p,v: (json.dump(v, open(p,"w"), indent=2), open(p,"a").write("\n"))
w("events/not-for-me/cloudwatch-logs-control-message.json", {"awslogs":{"data":enc(ctl)}})
w("events/not-for-me/cloudwatch-logs-bad-base64.json", {"awslogs":{"data":"H4sI!!not-base64!!"}})
w("events/not-for-me/cloudwatch-logs-not-gzip.json", {"awslogs":{"data":base64.b64encode(json.dumps(doc).encode()).decode()}})
w("events/not-for-me/cloudwatch-logs-wrong-json.json", {"awslogs":{"data":base64.b64encode(gzip.compress(b'{"messageType":"DATA_MESSAGE","logEvents":"none"}', mtime=0)).decode()}})
lam = dict(doc, logGroup="/aws/lambda/nbaops-dev-pg-health", logStream="2026/11/30/[$LATEST]0f1e2d3c", logEvents=events[:1])
w("events/not-for-me/cloudwatch-logs-lambda-log-group.json", {"awslogs":{"data":enc(lam)}})
