//! Approvals (issue #19) as alert-router serves them: the Approve/Deny links an alert asking for
//! an approval carries, the endpoint behind them (GET shows what will happen, POST decides), the
//! dispatch of an approved request to its owning function, and the expiry the sweep applies.
//!
//! A decision changes only the request's ledger item (`decide`: once, by a named approver, before
//! expiry); the action itself is carried out later by the owning function, through its guard,
//! from the one-time schedule `approval-<id>` (`dispatch`). Every answer — decided or refused —
//! leaves an audit record. Every refusal is a 403 with no state change: a forged, wrong-key or
//! expired link, an unknown request, an approver the request does not name, a request already
//! decided (a re-used link; an approved one is dispatched again, which creates nothing new).

use chrono::{DateTime, Utc};

use nbaops_shared::config::alerts::Channel;
use nbaops_shared::guard::approval::{
    expire_due, state_words, Answering, ApprovalRequest, ApprovalState, Decided, OnTimeout, Verdict,
};
use nbaops_shared::runtime::Ctx;
use nbaops_shared::Result;

use crate::ack::UrlRequest;
use crate::channels::{ApprovalPart, Kind, Message};
use crate::link::{self, ApprovalLink};
use crate::router::{AlertRouter, Reply};

/// The name recorded for a link made for a request that names no approvers.
pub const LINK_HOLDER: &str = "link holder";

fn verb(v: Verdict) -> &'static str {
    match v {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    }
}

fn html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl AlertRouter {
    /// What an alert (or its escalation) asking for approval `id` carries: one Approve and one Deny link per approver
    /// the request names (one unnamed pair when it names none), valid until the request expires,
    /// and a note. A request that cannot be read gets a note saying so and no links.
    pub(crate) async fn approval_part(
        &self,
        approval_id: Option<&str>,
        ctx: &Ctx<'_>,
    ) -> Option<ApprovalPart> {
        let id = approval_id?;
        let env = ctx.env();
        let req = match ApprovalRequest::load(ctx.deps.ledger.as_ref(), &env, id).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Some(ApprovalPart {
                    id: id.into(),
                    links: vec![],
                    note: format!("approval {id}: no such request in {env}: nothing to answer"),
                })
            }
            Err(e) => {
                tracing::error!(approval = id, error = %e, "approval request unreadable: sent without links");
                return Some(ApprovalPart {
                    id: id.into(),
                    links: vec![],
                    note: format!("approval {id}: the request could not be read ({e})"),
                });
            }
        };
        if req.state != ApprovalState::Pending {
            // Answered (or expired) meanwhile, e.g. before an escalation: nothing left to answer.
            return Some(ApprovalPart {
                id: req.id.clone(),
                links: vec![],
                note: format!("approval {}: already {}", req.id, state_words(&req)),
            });
        }
        let if_none = match req.on_timeout {
            OnTimeout::Deny => "nothing is done",
            OnTimeout::Approve => "it is approved",
        };
        let mut links = vec![];
        if let (Some(base), Some(key)) = (self.cfg.ack_base_url.as_deref(), &self.keys.current) {
            let names: Vec<Option<String>> = if req.approvers.is_empty() {
                vec![None]
            } else {
                req.approvers.iter().cloned().map(Some).collect()
            };
            for name in names {
                for verdict in [Verdict::Approve, Verdict::Deny] {
                    let a = ApprovalLink {
                        verdict,
                        id: req.id.clone(),
                        approver: name.clone(),
                    };
                    let label = match (verdict, &name) {
                        (Verdict::Approve, Some(n)) => format!("Approve as {n}"),
                        (Verdict::Deny, Some(n)) => format!("Deny as {n}"),
                        (Verdict::Approve, None) => "Approve".into(),
                        (Verdict::Deny, None) => "Deny".into(),
                    };
                    if let Some(url) = link::approval_link(base, key, &a, req.expires_at) {
                        links.push((label, url));
                    }
                }
            }
        }
        Some(ApprovalPart {
            id: req.id.clone(),
            links,
            note: format!(
                "approval {}: {} — needs an answer by {} (if nobody answers, {if_none}); \
                 or `nbaops approve {} --as NAME` / `nbaops deny {} --as NAME`",
                req.id,
                req.sentence,
                req.expires_at.to_rfc3339(),
                req.id,
                req.id
            ),
        })
    }

    /// A request on an approval link: checked, then GET shows, POST decides.
    pub(crate) async fn on_approval_link(&self, req: &UrlRequest, ctx: &Ctx<'_>) -> Result<Reply> {
        let now = ctx.now();
        let from = req.source_ip.clone().unwrap_or_else(|| "?".into());
        let a = match link::verify_approval(&self.keys, &req.query, now) {
            Ok(a) => a,
            Err(refusal) => {
                let why = match refusal {
                    link::Refusal::Missing => "this link is incomplete",
                    link::Refusal::UnknownKey => {
                        "this link was signed with a key that is no longer accepted"
                    }
                    link::Refusal::Forged => "this link is not valid",
                    link::Refusal::Expired => "this link has expired",
                };
                tracing::warn!(?refusal, source_ip = %from, "approval link refused");
                if req.method == "POST" {
                    // The claimed id and verdict, for the record: nothing of it is trusted.
                    let id = req.query.get("approval").cloned().unwrap_or_default();
                    let verdict = match req.query.get("verdict").map(String::as_str) {
                        Some("approve") => Verdict::Approve,
                        _ => Verdict::Deny,
                    };
                    let who = Decided {
                        by: req.query.get("as").cloned().unwrap_or_else(|| "?".into()),
                        from,
                        at: now,
                    };
                    // The request it claims to answer (read only), so the refusal is in its
                    // resource's history.
                    let claimed = if id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()) {
                        ApprovalRequest::load(ctx.deps.ledger.as_ref(), &ctx.env(), &id)
                            .await
                            .ok()
                            .flatten()
                    } else {
                        None
                    };
                    let what = format!("refused: {why}");
                    self.answering(ctx)
                        .audit(&id, verdict, &who, claimed.as_ref(), false, &what)
                        .await?;
                }
                return Ok(Reply::http(403, why));
            }
        };
        match req.method.as_str() {
            "GET" | "HEAD" => self.approval_page(&a, req, ctx).await,
            "POST" => {
                let who = Decided {
                    by: a.approver.clone().unwrap_or_else(|| LINK_HOLDER.into()),
                    from,
                    at: now,
                };
                self.answer(ctx, &a.id, a.verdict, who).await
            }
            _ => Ok(Reply::http(405, "use GET or POST")),
        }
    }

    /// The page a GET shows (chat apps and mail scanners fetch links: a GET changes nothing):
    /// the request's sentence, before → after, expiry and state, and the button that POSTs.
    async fn approval_page(
        &self,
        a: &ApprovalLink,
        req: &UrlRequest,
        ctx: &Ctx<'_>,
    ) -> Result<Reply> {
        let Some(r) = ApprovalRequest::load(ctx.deps.ledger.as_ref(), &ctx.env(), &a.id).await?
        else {
            return Ok(Reply::http(403, "no such approval request"));
        };
        let action = format!("{}?{}", req.raw_path, req.raw_query)
            .replace('"', "%22")
            .replace('<', "%3C");
        let who = a.approver.as_deref().unwrap_or(LINK_HOLDER);
        let button = match (r.state, a.verdict) {
            (ApprovalState::Pending, v) => format!(
                "<form method=\"post\" action=\"{action}\"><button type=\"submit\">{} as {}</button></form>",
                if v == Verdict::Approve { "Approve" } else { "Deny" },
                html(who)
            ),
            _ => "<p>Already decided: this link does nothing any more.</p>".into(),
        };
        let body = format!(
            "<!doctype html><title>Approval {id}</title><h1>{verb} approval {id}?</h1>\
             <p>{sentence}</p><p>{act} {res}: <code>{before}</code> → <code>{after}</code></p>\
             <p>Requested by {function}; expires {exp}; state: {state}</p>{button}",
            id = html(&r.id),
            verb = if a.verdict == Verdict::Approve {
                "Approve"
            } else {
                "Deny"
            },
            sentence = html(&r.sentence),
            act = html(&r.action.action),
            res = html(&r.action.resource),
            before = html(&r.action.before.to_string()),
            after = html(&r.action.after.to_string()),
            function = html(&r.function),
            exp = r.expires_at.to_rfc3339(),
            state = html(&state_words(&r)),
        );
        Ok(Reply::Http {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body,
        })
    }

    /// The shared answering of this invocation (`nbaops plan`: nothing scheduled).
    fn answering<'a>(&'a self, ctx: &Ctx<'a>) -> Answering<'a> {
        Answering {
            cfg: ctx.cfg(),
            ledger: ctx.deps.ledger.as_ref(),
            notifier: ctx.deps.notifier.as_ref(),
            scheduler: if self.plan {
                None
            } else {
                self.scheduler.as_deref()
            },
            dispatch: &self.cfg.approval,
            function: ctx.function,
            request_id: &ctx.inv.request_id,
        }
    }

    /// One answer from a link's POST: 200 when it decided, 403 when refused (nothing changed).
    async fn answer(
        &self,
        ctx: &Ctx<'_>,
        id: &str,
        verdict: Verdict,
        who: Decided,
    ) -> Result<Reply> {
        let a = self.answering(ctx).answer(id, verdict, who.clone()).await?;
        tracing::info!(approval = id, verdict = verb(verdict), by = %who.by, from = %who.from, decided = a.decided, what = %a.what, "approval answered");
        Ok(Reply::http(if a.decided { 200 } else { 403 }, a.what))
    }

    /// The sweep's part: every pending request past its expiry moved by its `on_timeout`, once;
    /// each announced once (Slack and email of the request's severity), those approved by timeout
    /// dispatched. Returns the notes for the sweep's record.
    pub(crate) async fn expire_approvals(
        &self,
        ctx: &Ctx<'_>,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        let env = ctx.env();
        let (moved, unreadable) = expire_due(ctx.deps.ledger.as_ref(), &env, now).await?;
        let mut notes: Vec<String> = unreadable
            .iter()
            .map(|e| format!("approval item unreadable, left as is: {e}"))
            .collect();
        for r in moved {
            let who = r.decided.clone().unwrap_or(Decided {
                by: "timeout".into(),
                from: "timeout".into(),
                at: now,
            });
            let (verdict, what) = if r.state == ApprovalState::Approved {
                (
                    Verdict::Approve,
                    format!(
                        "approved by timeout; {}",
                        self.answering(ctx).dispatch_approved(&r, now).await
                    ),
                )
            } else {
                (Verdict::Deny, "expired: nothing was done".to_string())
            };
            self.answering(ctx)
                .audit(&r.id, verdict, &who, Some(&r), true, &what)
                .await?;
            let summary = format!("approval {} {what}", r.id);
            let msg = Message {
                kind: Kind::Notice,
                severity: r.action.severity,
                env: env.clone(),
                dedup_key: format!("approval-{}", r.id),
                summary: summary.clone(),
                resource: r.action.resource.clone(),
                source_function: r.function.clone(),
                actions_taken: vec![],
                runbook: None,
                details: serde_json::Value::Null,
                reason: Some(r.sentence.chars().take(300).collect()),
                ack_url: None,
                approval: None,
                on_call: None,
                grouped: vec![],
            };
            let mut sent = vec![];
            for c in self.cfg.channels(r.action.severity) {
                if *c != Channel::Pagerduty {
                    sent.push(self.send(ctx, *c, &msg).await.line());
                }
            }
            notes.push(format!("{summary} ({})", sent.join("; ")));
        }
        Ok(notes)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    use serde_json::{json, Value};

    use nbaops_shared::alerts::Severity;
    use nbaops_shared::fakes::{leak, FakeScheduler, Shared};
    use nbaops_shared::guard::approval::{approval_id, approved_input};
    use nbaops_shared::guard::ProposedAction;

    use crate::router::SWEEP_TASK;
    use crate::test_world::*;

    const TARGET: &str =
        "arn:aws:lambda:us-east-1:123456789012:function:nbaops-dev-scale-on-alarm:live";
    const ROLE: &str = "arn:aws:iam::123456789012:role/nbaops-dev-approvals";

    async fn approvals_world() -> (World, &'static FakeScheduler) {
        let target = format!("scale-on-alarm={TARGET}");
        let mut w = world(&[
            ("NBAOPS_ALERTS__APPROVAL__GROUP", "nbaops-dev-approvals"),
            ("NBAOPS_ALERTS__APPROVAL__ROLE_ARN", ROLE),
            ("NBAOPS_ALERTS__APPROVAL__TARGETS", &target),
        ])
        .await;
        let sched = leak(FakeScheduler::default());
        w.router.scheduler = Some(Box::new(Shared(sched)));
        (w, sched)
    }

    async fn request(
        w: &World,
        event: &str,
        approvers: &[&str],
        on_timeout: OnTimeout,
    ) -> ApprovalRequest {
        let action: ProposedAction = serde_json::from_value(json!({
            "action": "rds.modify_class", "resource": "rds:nbaops-dev-db", "reason": "memory",
            "severity": "P2", "disruptive": true, "bounds": null, "cooldown_key": "class",
            "cooldown_seconds": 3600, "before": {"class": "db.t3.micro"},
            "after": {"class": "db.t3.small"},
            "explanation": nbaops_shared::guard::Explanation::default(),
        }))
        .unwrap();
        let r = ApprovalRequest {
            id: approval_id(event, &action.action, &action.resource),
            env: "dev".into(),
            function: "scale-on-alarm".into(),
            event_id: event.into(),
            action,
            sentence: "Would change nbaops-dev-db db.t3.micro → db.t3.small <now>".into(),
            requested_at: t("2026-11-25T10:00:00Z"),
            expires_at: t("2026-11-25T11:00:00Z"),
            on_timeout,
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
            state: ApprovalState::Pending,
            decided: None,
            outcome: None,
            origin: None,
        };
        assert!(r.create(w.deps.ledger.as_ref()).await.unwrap());
        r
    }

    async fn stored(w: &World, id: &str) -> ApprovalRequest {
        ApprovalRequest::load(w.deps.ledger.as_ref(), "dev", id)
            .await
            .unwrap()
            .unwrap()
    }

    /// The alert asking for `r`, through the router; the links its Slack message carries.
    async fn announce(w: &World, r: &ApprovalRequest, msg_id: &str) -> Vec<(String, String)> {
        // P1: every channel, PagerDuty included.
        let mut a = alert(Severity::P1, &format!("approval#{}", r.id));
        a.approval_id = Some(r.id.clone());
        run(w, sns_alert(&a, msg_id), "2026-11-25T10:00:00Z")
            .await
            .unwrap();
        let text = slack_texts(w).last().unwrap().clone();
        text.split('<')
            .skip(1)
            .filter_map(|p| p.split_once('|'))
            .filter(|(url, _)| url.contains("approval="))
            .map(|(url, rest)| (rest.split('>').next().unwrap().to_string(), url.to_string()))
            .collect()
    }

    async fn http(
        w: &World,
        method: &str,
        q: &BTreeMap<String, String>,
        at: &str,
    ) -> (u16, String) {
        match run(w, url_request(method, q), at).await.unwrap() {
            Reply::Http { status, body, .. } => (status, body),
            other => panic!("{other:?}"),
        }
    }

    async fn audit_of(w: &World) -> Vec<Value> {
        let ledger = w.deps.ledger.as_ref();
        ledger
            .query("audit#rds:nbaops-dev-db", "")
            .await
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    #[tokio::test]
    async fn links_get_post_once_deny_and_refusals() {
        let (w, sched) = approvals_world().await;
        let r = request(&w, "ev-1", &["alice", "bob"], OnTimeout::Deny).await;
        let links = announce(&w, &r, "m1").await;
        let labels: Vec<&str> = links.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "Approve as alice",
                "Deny as alice",
                "Approve as bob",
                "Deny as bob"
            ]
        );
        let body = w.sns.published().last().unwrap().message.clone();
        assert!(
            body.contains("Approve as bob: https://ack.test/?approval="),
            "{body}"
        );
        let pd = w.http.requests_to(PD);
        let pd = pd.last().unwrap();
        assert!(pd["payload"]["custom_details"]["approval"]
            .as_str()
            .unwrap()
            .contains(&r.id));
        assert!(!pd.to_string().contains("verdict="), "{pd}");

        let approve_alice = link::query_of(&links[0].1);
        // GET: the page, nothing changed.
        let (status, page) = http(&w, "GET", &approve_alice, "2026-11-25T10:05:00Z").await;
        assert_eq!(status, 200);
        assert!(
            page.contains("db.t3.micro → db.t3.small &lt;now&gt;")
                && page.contains("Approve as alice"),
            "{page}"
        );
        assert_eq!(stored(&w, &r.id).await.state, ApprovalState::Pending);

        // Forged (the approver changed), wrong key, expired: 403, nothing changed.
        let mut forged = approve_alice.clone();
        forged.insert("as".into(), "mallory".into());
        assert_eq!(
            http(&w, "POST", &forged, "2026-11-25T10:05:00Z").await.0,
            403
        );
        let guessed = link::SigningKey {
            kid: "k1".into(),
            key: b"guessed-key-0000000000".to_vec(),
        };
        let a = ApprovalLink {
            verdict: Verdict::Approve,
            id: r.id.clone(),
            approver: Some("alice".into()),
        };
        let wrong = link::query_of(
            &link::approval_link("https://ack.test/", &guessed, &a, r.expires_at).unwrap(),
        );
        assert_eq!(
            http(&w, "POST", &wrong, "2026-11-25T10:05:00Z").await.0,
            403
        );
        let (status, body) = http(&w, "POST", &approve_alice, "2026-11-25T11:00:01Z").await;
        assert_eq!((status, body.as_str()), (403, "this link has expired"));
        // An acknowledgement signature does not pass for an approval.
        let mut ack_sig = approve_alice.clone();
        let ack = link::query_of(&link::ack_link(
            "https://ack.test/",
            w.router.keys.current.as_ref().unwrap(),
            "x",
            r.expires_at,
        ));
        ack_sig.insert("sig".into(), ack["sig"].clone());
        assert_eq!(
            http(&w, "POST", &ack_sig, "2026-11-25T10:05:00Z").await.0,
            403
        );
        assert_eq!(stored(&w, &r.id).await.state, ApprovalState::Pending);
        assert!(sched.all().is_empty());

        // POST: approved by alice from the source address, one schedule.
        let (status, body) = http(&w, "POST", &approve_alice, "2026-11-25T10:06:00Z").await;
        assert_eq!(status, 200, "{body}");
        let now = stored(&w, &r.id).await;
        assert_eq!(now.state, ApprovalState::Approved);
        let d = now.decided.clone().unwrap();
        assert_eq!(
            (d.by.as_str(), d.from.as_str(), d.at),
            ("alice", "203.0.113.9", t("2026-11-25T10:06:00Z"))
        );
        let all = sched.all();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (
                all[0].group.as_str(),
                all[0].name.clone(),
                all[0].target_arn.as_str(),
                all[0].role_arn.as_str()
            ),
            (
                "nbaops-dev-approvals",
                format!("approval-{}", r.id),
                TARGET,
                ROLE
            )
        );
        assert_eq!(all[0].input, approved_input(&now));
        assert_eq!(all[0].expression(), "at(2026-11-25T10:07:00)");

        // The same POST again, and bob's deny: refused, nothing changed, no second schedule.
        let (status, body) = http(&w, "POST", &approve_alice, "2026-11-25T10:07:00Z").await;
        assert_eq!(status, 403);
        assert!(body.contains("already approved by alice"), "{body}");
        assert_eq!(
            http(
                &w,
                "POST",
                &link::query_of(&links[3].1),
                "2026-11-25T10:07:00Z"
            )
            .await
            .0,
            403
        );
        assert_eq!(stored(&w, &r.id).await, now);
        assert_eq!(sched.all().len(), 1);

        // Deny on another request: denied, no schedule.
        let r2 = request(&w, "ev-2", &["alice"], OnTimeout::Deny).await;
        let links2 = announce(&w, &r2, "m2").await;
        let (status, body) = http(
            &w,
            "POST",
            &link::query_of(&links2[1].1),
            "2026-11-25T10:08:00Z",
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "denied: nothing is done"));
        assert_eq!(stored(&w, &r2.id).await.state, ApprovalState::Denied);
        assert_eq!(sched.all().len(), 1);

        // Every answer audited: who, from where, what it came to.
        let audit = audit_of(&w).await;
        let sentences: Vec<&str> = audit
            .iter()
            .map(|a| a["sentence"].as_str().unwrap())
            .collect();
        assert!(
            sentences
                .iter()
                .any(|s| s.starts_with("alice from 203.0.113.9 answered approve")
                    && s.contains("approved;")),
            "{sentences:?}"
        );
        assert!(
            sentences
                .iter()
                .any(|s| s.contains("answered deny") && s.contains("denied")),
            "{sentences:?}"
        );
        assert!(
            sentences.iter().filter(|s| s.contains("refused")).count() >= 3,
            "{sentences:?}"
        );
        assert_eq!(
            audit.iter().filter(|a| a["outcome"] == "acted").count(),
            2,
            "{audit:?}"
        );
    }

    #[tokio::test]
    async fn unnamed_links_expiry_notice_once_and_approval_by_timeout() {
        let (w, sched) = approvals_world().await;
        let anyone = request(&w, "ev-3", &[], OnTimeout::Deny).await;
        let links = announce(&w, &anyone, "m3").await;
        assert_eq!(
            links.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(),
            ["Approve", "Deny"]
        );
        assert!(!links[0].1.contains("as="));
        let by_timeout = request(&w, "ev-4", &["alice"], OnTimeout::Approve).await;
        let tick = json!({"nbaops": {"task": SWEEP_TASK, "at": "2026-11-25T11:00:00Z"}});
        let rec = report(run(&w, tick.clone(), "2026-11-25T11:00:00Z").await);
        let notes = rec.records[0].notes.join("\n");
        assert!(
            notes.contains(&format!("approval {} expired: nothing was done", anyone.id)),
            "{notes}"
        );
        assert_eq!(stored(&w, &anyone.id).await.state, ApprovalState::Expired);
        assert_eq!(
            stored(&w, &by_timeout.id).await.state,
            ApprovalState::Approved
        );
        let notices = |w: &World| {
            slack_texts(w)
                .into_iter()
                .filter(|t| t.starts_with("*NOTICE"))
                .collect::<Vec<_>>()
        };
        let texts = notices(&w);
        assert_eq!(texts.len(), 2, "{texts:?}");
        // The unanswered approval's escalation carries its links too.
        let escalated = slack_texts(&w)
            .into_iter()
            .find(|t| t.starts_with("*ESCALATED") && t.contains(&anyone.id))
            .unwrap();
        assert!(
            escalated.contains("|Approve>") && escalated.contains("|Deny>"),
            "{escalated}"
        );
        assert!(texts
            .iter()
            .any(|t| t.contains(&format!("approval {} expired: nothing was done", anyone.id))));
        let all = sched.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name, format!("approval-{}", by_timeout.id));
        // A second sweep: nothing new announced or scheduled.
        report(run(&w, tick, "2026-11-25T11:05:00Z").await);
        assert_eq!(notices(&w).len(), 2);
        assert_eq!(sched.all().len(), 1);
        // The expired request's link now only refuses.
        assert_eq!(
            http(
                &w,
                "POST",
                &link::query_of(&links[0].1),
                "2026-11-25T10:59:00Z"
            )
            .await
            .0,
            403
        );
        assert_eq!(stored(&w, &anyone.id).await.state, ApprovalState::Expired);
    }

    /// A schedule refused after the approval: the approval stays, the answer and its audit say
    /// it was not dispatched, and the same link answered again dispatches it.
    #[tokio::test]
    async fn a_failed_dispatch_is_said_and_retried_by_answering_again() {
        let (w, sched) = approvals_world().await;
        let r = request(&w, "ev-5", &["alice"], OnTimeout::Deny).await;
        let links = announce(&w, &r, "m5").await;
        let approve = link::query_of(&links[0].1);
        *sched.refuse_creates.lock().unwrap() = Some("AccessDeniedException".into());
        let (status, body) = http(&w, "POST", &approve, "2026-11-25T10:06:00Z").await;
        assert_eq!(status, 200);
        assert!(
            body.contains("NOT dispatched (") && body.contains("AccessDeniedException"),
            "{body}"
        );
        assert_eq!(stored(&w, &r.id).await.state, ApprovalState::Approved);
        assert!(sched.all().is_empty());
        let audit = audit_of(&w).await;
        assert!(
            audit
                .iter()
                .any(|a| a["sentence"].as_str().unwrap().contains("NOT dispatched")),
            "{audit:?}"
        );
        *sched.refuse_creates.lock().unwrap() = None;
        let (status, body) = http(&w, "POST", &approve, "2026-11-25T10:08:00Z").await;
        assert_eq!(status, 403, "already approved: refused, nothing changed");
        assert!(body.contains("carries it out within a minute"), "{body}");
        assert_eq!(sched.all().len(), 1);
        assert_eq!(
            sched.all()[0].input,
            approved_input(&stored(&w, &r.id).await)
        );
    }
}
