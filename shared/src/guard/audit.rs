//! Audit records (ledger item, log line, actions topic) and reading ledger state loudly.

use super::*;

/// Ledger item + JSON log line + outbound event. The log line comes first so that even a
/// failing ledger leaves a trace, and the outbound event is attempted even when the ledger write
/// failed (after the SDK's retries): an action that happened is never known only to a log line.
/// The first error is returned.
pub async fn write_audit(
    cfg: &Config,
    ledger: &dyn Ledger,
    notifier: &dyn Notifier,
    rec: &AuditRecord,
) -> Result<()> {
    write_audit_with(cfg, ledger, notifier, rec, Vec::new()).await
}

/// [`write_audit`], the audit item written in one ledger request with `with` (the claim's fate).
pub async fn write_audit_with(
    cfg: &Config,
    ledger: &dyn Ledger,
    notifier: &dyn Notifier,
    rec: &AuditRecord,
    with: Vec<LedgerWrite>,
) -> Result<()> {
    let body = serde_json::to_value(rec)
        .map_err(|e| NbaopsError::InvalidEvent(format!("audit record not serialisable: {e}")))?;
    tracing::info!(target: "nbaops::audit", audit = %body, outcome = ?rec.outcome, action = %rec.action, resource = %rec.resource, "audit");
    // Two records of one event (a retry, a dry-run then a live run) must not overwrite each other.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let sk = format!(
        "{}#{}#{}#{}#{seq}",
        rec.at.to_rfc3339(),
        rec.action,
        rec.event_id,
        rec.request_id
    );
    let expires = rec.at.timestamp() + cfg.guard.audit_ttl_days * 86_400;
    let pk = format!("audit#{}", rec.resource);
    let day = audit_day(rec.at);
    let stored = if with.is_empty() {
        ledger
            .put_on_day(&pk, &sk, &body, Some(expires), &day)
            .await
    } else {
        let mut writes = with;
        writes.push(LedgerWrite::put(&pk, &sk, body.clone(), Some(expires)).on_day(&day));
        match ledger.write_all(&writes).await {
            Ok(None) => Ok(()),
            Ok(Some(i)) => Err(NbaopsError::dependency(
                "dynamodb",
                format!("audit write refused at item {i}, which carries no condition"),
            )),
            Err(e) => Err(e),
        }
    };
    if let Err(e) = &stored {
        tracing::error!(target: "nbaops::audit", error = %e, action = %rec.action, resource = %rec.resource, "audit record not stored in the ledger");
    }
    if !cfg.actions_topic_arn.is_empty() {
        let mut attrs = BTreeMap::new();
        attrs.insert(
            "outcome".into(),
            serde_json::to_value(rec.outcome)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
        );
        attrs.insert("function".into(), rec.function.clone());
        let subject = format!("nbaops action {} {}", rec.action, rec.resource);
        let subject: String = subject
            .chars()
            .filter(|c| c.is_ascii() && !c.is_ascii_control())
            .take(100)
            .collect();
        let published = notifier
            .publish(&cfg.actions_topic_arn, &subject, &body.to_string(), &attrs)
            .await;
        stored?;
        published?;
        return Ok(());
    }
    stored
}

/// The day (YYYY-MM-DD, UTC) an audit record is indexed under ([`Ledger::query_day`]).
pub fn audit_day(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d").to_string()
}

/// Audit records of one day, newest first, from the ledger's by-day index (no table scan). An
/// item of the index that is not an audit record this version can read is returned as `Err`
/// with its key, never dropped silently.
pub async fn audit_of_day(
    ledger: &dyn Ledger,
    day: &str,
) -> Result<Vec<std::result::Result<AuditRecord, String>>> {
    Ok(ledger
        .query_day(day)
        .await?
        .into_iter()
        .filter(|i| i.pk.starts_with("audit#"))
        .map(|i| {
            serde_json::from_value(i.data).map_err(|e| {
                format!(
                    "{} {}: not an audit record this version reads: {e}",
                    i.pk, i.sk
                )
            })
        })
        .collect())
}

/// Ledger state as stored: `Ok(None)` when there is none, `Err` (the decode error) when there is
/// an item this version cannot read — never silently "no state".
pub fn decode_state<T: serde::de::DeserializeOwned>(
    item: Option<Value>,
) -> std::result::Result<Option<T>, String> {
    match item {
        None => Ok(None),
        Some(v) => serde_json::from_value(v)
            .map(Some)
            .map_err(|e| e.to_string()),
    }
}

/// A ledger item a function cannot read (a newer version's format, a corrupt write): a P2 on the
/// alerts topic, and the note for the report. The caller takes no action on that resource.
pub async fn report_unreadable_state(
    cfg: &Config,
    notifier: &dyn Notifier,
    resource: &str,
    what: &str,
    err: &str,
    now: DateTime<Utc>,
) -> Result<(String, Alert)> {
    let note = format!("{resource}: {what} unreadable ({err}): not acting on state it cannot read");
    let alert = Alert::new(
        Severity::P2,
        &cfg.env.to_string(),
        &cfg.function,
        resource,
        format!("ledger-unreadable#{resource}#{what}"),
        note.clone(),
        now,
    )
    .with_runbook(
        "Inspect the ledger item (a newer version's format or a corrupt write); fix or delete it, then re-run.",
    );
    AlertPublisher {
        notifier,
        topic_arn: &cfg.alerts_topic_arn,
    }
    .publish(&alert)
    .await?;
    Ok((note, alert))
}

/// Audit records of one resource, oldest first.
pub async fn audit_trail(ledger: &dyn Ledger, resource: &str) -> Result<Vec<AuditRecord>> {
    let items = ledger.query(&format!("audit#{resource}"), "").await?;
    Ok(items
        .into_iter()
        .filter_map(|(_, v)| serde_json::from_value(v).ok())
        .collect())
}
