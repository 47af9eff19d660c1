//! The acknowledgement endpoint (the function URL behind the links in every message): the
//! request, the link check, the page a GET shows (chat apps and mail scanners fetch links, so a
//! GET only shows the button that POSTs) and the POST that acknowledges.
//!
//! The request is read tolerantly from the Lambda function URL payload (format 2.0) rather than
//! as `aws_lambda_events`' `LambdaFunctionUrlRequest`: that type requires
//! `requestContext.timeEpoch` and `isBase64Encoded`, which nothing here reads and the requests
//! the tests send leave out (a test below shows the type refusing them).

use std::collections::BTreeMap;

use serde_json::Value;

use nbaops_shared::config::alerts::Channel;
use nbaops_shared::runtime::Ctx;
use nbaops_shared::Result;

use crate::channels::{Kind, Message};
use crate::link;
use crate::plan::IncidentStatus;
use crate::router::{AlertRouter, Reply};

/// What the endpoint reads of a function URL request.
#[derive(Debug, Clone, PartialEq)]
pub struct UrlRequest {
    /// Upper case.
    pub method: String,
    pub query: BTreeMap<String, String>,
    pub source_ip: Option<String>,
    pub raw_path: String,
    pub raw_query: String,
}

impl UrlRequest {
    /// The request, when the payload is one (it has `requestContext.http.method`).
    pub fn of(payload: &Value) -> Option<UrlRequest> {
        let method = payload.pointer("/requestContext/http/method")?;
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
        Some(UrlRequest {
            method: method.as_str().unwrap_or("").to_ascii_uppercase(),
            query: payload
                .get("queryStringParameters")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            source_ip: text(payload.pointer("/requestContext/http/sourceIp")),
            raw_path: text(payload.get("rawPath")).unwrap_or_else(|| "/".into()),
            raw_query: text(payload.get("rawQueryString")).unwrap_or_default(),
        })
    }
}

/// The page a GET shows: the alert's key and the button that POSTs the same link.
fn ack_page(key: &str, req: &UrlRequest) -> Reply {
    let action = format!("{}?{}", req.raw_path, req.raw_query)
        .replace('"', "%22")
        .replace('<', "%3C");
    let shown = key
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    Reply::Http {
        status: 200,
        content_type: "text/html; charset=utf-8",
        body: format!("<!doctype html><title>Acknowledge alert</title><p>Alert <code>{shown}</code></p><form method=\"post\" action=\"{action}\"><button type=\"submit\">Acknowledge</button></form>"),
    }
}

impl AlertRouter {
    pub(crate) async fn on_url_request(&self, req: &UrlRequest, ctx: &Ctx<'_>) -> Result<Reply> {
        if self.keys.is_empty() {
            return Ok(Reply::http(403, "acknowledgement links are not configured"));
        }
        if link::is_approval(&req.query) {
            return self.on_approval_link(req, ctx).await;
        }
        let key = match link::verify(&self.keys, &req.query, ctx.now()) {
            Ok(k) => k,
            Err(refusal) => {
                let source_ip = req.source_ip.as_deref().unwrap_or("");
                let kid = req.query.get("kid").map(String::as_str).unwrap_or("");
                tracing::warn!(?refusal, source_ip, kid, "acknowledgement link refused");
                let why = match refusal {
                    link::Refusal::Missing => "this link is incomplete",
                    link::Refusal::UnknownKey => {
                        "this link was signed with a key that is no longer accepted"
                    }
                    link::Refusal::Forged => "this link is not valid",
                    link::Refusal::Expired => "this link has expired",
                };
                return Ok(Reply::http(403, why));
            }
        };
        match req.method.as_str() {
            "GET" | "HEAD" => Ok(ack_page(&key, req)),
            "POST" => self.acknowledge(&key, req, ctx).await,
            _ => Ok(Reply::http(405, "use GET or POST")),
        }
    }

    async fn acknowledge(&self, key: &str, req: &UrlRequest, ctx: &Ctx<'_>) -> Result<Reply> {
        let now = ctx.now();
        let store = self.incidents(ctx);
        let Some(mut inc) = store.load(key).await? else {
            return Ok(Reply::http(404, "no such alert"));
        };
        match inc.status {
            IncidentStatus::Resolved => return Ok(Reply::http(200, "already resolved")),
            IncidentStatus::Acknowledged => {
                return Ok(Reply::http(
                    200,
                    format!(
                        "already acknowledged at {}",
                        inc.acknowledged_at
                            .map(|t| t.to_rfc3339())
                            .unwrap_or_default()
                    ),
                ))
            }
            IncidentStatus::Open | IncidentStatus::Escalated => {}
        }
        let by = format!("link from {}", req.source_ip.as_deref().unwrap_or("?"));
        inc.status = IncidentStatus::Acknowledged;
        inc.acknowledged_at = Some(now);
        inc.acknowledged_by = Some(by.clone());
        inc.note(now, format!("acknowledged by {by}"));
        store.save(&inc, now).await?;
        // Tell the channels that page or thread (best effort: the acknowledgement itself is recorded).
        let msg = Message::of_incident(
            &inc,
            &ctx.env(),
            Kind::Acknowledged { by: "link".into() },
            None,
        );
        let mut told = vec![];
        for c in self.cfg.channels(inc.severity) {
            if matches!(c, Channel::Slack | Channel::Pagerduty) {
                let s = self.send(ctx, *c, &msg).await;
                told.push(s.line());
            }
        }
        tracing::info!(dedup_key = key, channels = ?told, "alert acknowledged");
        Ok(Reply::http(200, format!("acknowledged: {key}")))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    use nbaops_shared::alerts::Severity;
    use nbaops_shared::config::alerts;
    use nbaops_shared::config::{layer, Env};
    use nbaops_shared::fakes::*;

    use crate::router::SWEEP_TASK;
    use crate::test_world::*;

    fn status(r: Reply) -> u16 {
        match r {
            Reply::Http { status, .. } => status,
            other => panic!("{other:?}"),
        }
    }

    /// Why the request is read tolerantly: `aws_lambda_events`' function URL type refuses the
    /// requests the tests send (no `requestContext.timeEpoch`, no `isBase64Encoded`), which the
    /// endpoint reads as any function URL request.
    #[test]
    fn the_crate_type_refuses_what_the_endpoint_reads() {
        use aws_lambda_events::event::lambda_function_urls::LambdaFunctionUrlRequest;
        let q: BTreeMap<String, String> = [("key".to_string(), "k".to_string())].into();
        let payload = url_request("POST", &q);
        let err = serde_json::from_value::<LambdaFunctionUrlRequest>(payload.clone())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("timeEpoch"), "{err}");
        let read = UrlRequest::of(&payload).unwrap();
        assert_eq!(
            (read.method.as_str(), read.source_ip.as_deref(), read.query),
            ("POST", Some("203.0.113.9"), q)
        );
        // With the fields it requires, the type reads the same request.
        let mut full = payload;
        full["requestContext"]["timeEpoch"] = json!(1_795_000_000_000_i64);
        full["isBase64Encoded"] = json!(false);
        let typed = serde_json::from_value::<LambdaFunctionUrlRequest>(full).unwrap();
        assert_eq!(typed.request_context.http.method.as_deref(), Some("POST"));
        // Not a request: no method.
        assert_eq!(UrlRequest::of(&json!({"rawPath": "/"})), None);
    }

    #[tokio::test]
    async fn acknowledgement_link_valid_forged_expired_then_sweep_skips() {
        let w = world(&[]).await;
        fire(&w, Severity::P1, "k", "m1", "2026-11-25T10:00:00Z").await;
        let text = w.http.requests_to(SLACK)[0]["text"]
            .as_str()
            .unwrap()
            .to_string();
        let url = text
            .split('<')
            .next_back()
            .unwrap()
            .split('|')
            .next()
            .unwrap()
            .to_string();
        let q = link::query_of(&url);
        let mut forged = q.clone();
        forged.insert("key".into(), "other".into());
        assert_eq!(
            status(
                run(&w, url_request("POST", &forged), "2026-11-25T10:01:00Z")
                    .await
                    .unwrap()
            ),
            403
        );
        // Expired (the link lives 24 h).
        assert_eq!(
            status(
                run(&w, url_request("POST", &q), "2026-11-26T10:01:00Z")
                    .await
                    .unwrap()
            ),
            403
        );
        // A GET (a chat app unfurling the link) changes nothing.
        assert_eq!(
            status(
                run(&w, url_request("GET", &q), "2026-11-25T10:01:00Z")
                    .await
                    .unwrap()
            ),
            200
        );
        assert_eq!(
            load_incident(&w, "k").await.unwrap().unwrap().status,
            IncidentStatus::Open
        );
        assert_eq!(
            status(
                run(&w, url_request("POST", &q), "2026-11-25T10:02:00Z")
                    .await
                    .unwrap()
            ),
            200
        );
        let inc = load_incident(&w, "k").await.unwrap().unwrap();
        assert_eq!(inc.status, IncidentStatus::Acknowledged);
        assert_eq!(
            w.http.requests_to(PD).last().unwrap()["event_action"],
            "acknowledge"
        );
        // Acknowledged: the sweep does not escalate it.
        let tick = json!({"nbaops": {"task": SWEEP_TASK, "at": "2026-11-25T11:00:00Z"}});
        let before = w.http.requests().len();
        report(run(&w, tick, "2026-11-25T10:03:00Z").await);
        assert_eq!(w.http.requests().len(), before);
    }

    /// A router on the same deps with other config and link keys (a deploy of a rotation).
    async fn router_with(w: &World, vars: &[(&str, &str)], keys: &[(&str, &str)]) -> AlertRouter {
        let mut all: BTreeMap<String, String> = [
            ("NBAOPS_ALERTS__ACK__BASE_URL", "https://ack.test/"),
            ("NBAOPS_ALERTS__PAGERDUTY__EVENTS_URL", PD),
        ]
        .iter()
        .chain(vars)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        all.insert("NBAOPS_ALERTS__EMAIL_TOPIC_ARN".into(), EMAIL.into());
        let cfg = alerts::from_settings(&layer(Env::Dev, &all, &BTreeMap::new()).unwrap()).unwrap();
        let mut params = vec![("/nbaops/dev/secrets/alerts/slack_webhook_url", SLACK)];
        params.extend_from_slice(keys);
        AlertRouter::load(
            cfg,
            Box::new(Shared(w.http)),
            Box::new(Shared(w.dlq)),
            Some(&FakeParams::with(&params)),
        )
        .await
        .unwrap()
    }

    fn link_in(text: &str) -> BTreeMap<String, String> {
        link::query_of(text.rsplit('<').next().unwrap().split('|').next().unwrap())
    }

    async fn ack(
        w: &World,
        r: &AlertRouter,
        q: &BTreeMap<String, String>,
        at: &str,
    ) -> (u16, String) {
        match run_on(w, r, url_request("POST", q), at).await.unwrap() {
            Reply::Http { status, body, .. } => (status, body),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn link_key_rotation_old_key_accepted_unknown_kid_and_forged_refused() {
        const CURRENT: &str = "/nbaops/dev/secrets/alerts/link_signing_key";
        const PREVIOUS: &str = "/nbaops/dev/secrets/alerts/previous_link_signing_key";
        const NEW: &str = "rotated-unit-test-key-abcdefghij";
        let w = world(&[]).await;
        fire(&w, Severity::P1, "a", "m1", "2026-11-25T10:00:00Z").await;
        fire(&w, Severity::P1, "b", "m2", "2026-11-25T10:00:00Z").await;
        let slack = slack_texts(&w);
        let (old_a, old_b) = (link_in(&slack[0]), link_in(&slack[1]));
        assert_eq!(old_a["kid"], "k1");

        // Rotated: k2 signs, k1 still verifies.
        let rotated = router_with(
            &w,
            &[
                ("NBAOPS_ALERTS__ACK__KEY_ID", "k2"),
                ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
            ],
            &[(CURRENT, NEW), (PREVIOUS, SIGNING)],
        )
        .await;
        assert_eq!(
            ack(&w, &rotated, &old_a, "2026-11-25T10:05:00Z").await.0,
            200
        );
        assert_eq!(
            load_incident(&w, "a").await.unwrap().unwrap().status,
            IncidentStatus::Acknowledged
        );
        run_on(
            &w,
            &rotated,
            sns_alert(&alert(Severity::P1, "c"), "m3"),
            "2026-11-25T10:06:00Z",
        )
        .await
        .unwrap();
        let new_c = link_in(slack_texts(&w).last().unwrap());
        assert_eq!(new_c["kid"], "k2");

        // A made-up key id, and a k1 link relabelled k2: refused.
        let mut unknown = old_b.clone();
        unknown.insert("kid".into(), "k9".into());
        let (status, body) = ack(&w, &rotated, &unknown, "2026-11-25T10:07:00Z").await;
        assert_eq!(status, 403);
        assert!(body.contains("no longer accepted"), "{body}");
        let mut relabelled = old_b.clone();
        relabelled.insert("kid".into(), "k2".into());
        let (status, body) = ack(&w, &rotated, &relabelled, "2026-11-25T10:07:00Z").await;
        assert_eq!((status, body.as_str()), (403, "this link is not valid"));
        // Forged: a link for b signed with a guessed key under the current id.
        let guessed = link::SigningKey {
            kid: "k2".into(),
            key: b"guessed-key-000000000000".to_vec(),
        };
        let forged = link::query_of(&link::ack_link(
            "https://ack.test/",
            &guessed,
            "b",
            t("2026-11-26T10:00:00Z"),
        ));
        assert_eq!(
            ack(&w, &rotated, &forged, "2026-11-25T10:07:00Z").await.0,
            403
        );
        assert_eq!(
            load_incident(&w, "b").await.unwrap().unwrap().status,
            IncidentStatus::Open
        );

        // The rotation done (previous key removed): the old link names an unknown key, the new
        // one still works.
        let done = router_with(
            &w,
            &[("NBAOPS_ALERTS__ACK__KEY_ID", "k2")],
            &[(CURRENT, NEW)],
        )
        .await;
        let (status, body) = ack(&w, &done, &old_b, "2026-11-25T10:08:00Z").await;
        assert_eq!(status, 403);
        assert!(body.contains("no longer accepted"), "{body}");
        assert_eq!(ack(&w, &done, &new_c, "2026-11-25T10:08:00Z").await.0, 200);

        // A previous key id whose secret is missing: init still works, its links are refused.
        let half = router_with(
            &w,
            &[
                ("NBAOPS_ALERTS__ACK__KEY_ID", "k2"),
                ("NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID", "k1"),
            ],
            &[(CURRENT, NEW)],
        )
        .await;
        assert!(half.keys.previous.is_none() && half.keys.current.is_some());
        assert_eq!(ack(&w, &half, &old_b, "2026-11-25T10:09:00Z").await.0, 403);
        // A short previous key fails init, like a short current key.
        let cfg = alerts::from_settings(
            &layer(
                Env::Dev,
                &[(
                    "NBAOPS_ALERTS__ACK__PREVIOUS_KEY_ID".to_string(),
                    "k0".to_string(),
                )]
                .into(),
                &BTreeMap::new(),
            )
            .unwrap(),
        )
        .unwrap();
        let short = FakeParams::with(&[(CURRENT, NEW), (PREVIOUS, "short")]);
        let err = AlertRouter::load(
            cfg,
            Box::new(FakeHttpPost::default()),
            Box::new(FakeDeadLetter::default()),
            Some(&short),
        )
        .await
        .err()
        .unwrap();
        assert!(
            err.to_string().contains("previous_link_signing_key"),
            "{err}"
        );
    }
}
