//! The delivery envelopes read with `aws_lambda_events` types, where the crate reads them as the
//! tolerant reader ([`super::util`]) would; elsewhere the callers fall back to that reader.

use aws_lambda_events::{
    cloudwatch_alarms::CloudWatchAlarm, eventbridge::EventBridgeEvent, sns::SnsMessage,
    sqs::SqsMessage,
};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::util::{scalar_string, time_field};

/// An envelope type of the crate, and the keys of it we read.
pub(crate) trait Envelope: DeserializeOwned {
    /// The keys we take from it (the crate matches keys exactly, `util::get` in any case).
    const FIELDS: &'static [&'static str];
    /// Spellings only the tolerant reader accepts (`account` for `accountId`).
    const ALIASES: &'static [&'static str] = &[];
    /// Its time key, and the time the crate read there.
    const TIME: Option<&'static str> = None;
    fn time(&self) -> Option<DateTime<Utc>> {
        None
    }
}

impl Envelope for EventBridgeEvent {
    const FIELDS: &'static [&'static str] = &[
        "id",
        "detail-type",
        "source",
        "account",
        "time",
        "region",
        "resources",
    ];
    const TIME: Option<&'static str> = Some("time");
    fn time(&self) -> Option<DateTime<Utc>> {
        self.time
    }
}

impl Envelope for SnsMessage {
    const FIELDS: &'static [&'static str] =
        &["MessageId", "TopicArn", "Subject", "Timestamp", "Message"];
    const TIME: Option<&'static str> = Some("Timestamp");
    fn time(&self) -> Option<DateTime<Utc>> {
        Some(self.timestamp)
    }
}

impl Envelope for SqsMessage {
    const FIELDS: &'static [&'static str] = &["body"];
}

impl Envelope for CloudWatchAlarm<Value, Value> {
    const FIELDS: &'static [&'static str] = &["source", "alarmArn", "accountId", "region", "time"];
    const ALIASES: &'static [&'static str] = &["account"];
    const TIME: Option<&'static str> = Some("time");
    fn time(&self) -> Option<DateTime<Utc>> {
        Some(self.time)
    }
}

/// `v` read as the envelope `T`; `None` where the crate refuses it or would read it otherwise
/// than the tolerant reader: a key of [`Envelope::FIELDS`] spelled in another case or an
/// [`Envelope::ALIASES`] present, or a time chrono's relaxed RFC 3339 reads and ours does not
/// (inner spaces, `UTC` glued to the seconds) or reads otherwise.
pub(crate) fn typed<T: Envelope>(v: &Value) -> Option<T> {
    #[cfg(test)]
    if super::envelope_tests::TOLERANT_ONLY.with(std::cell::Cell::get) {
        return None;
    }
    let respelled = v.as_object()?.keys().any(|k| {
        T::FIELDS
            .iter()
            .any(|f| k != f && k.eq_ignore_ascii_case(f))
            || T::ALIASES.iter().any(|a| k.eq_ignore_ascii_case(a))
    });
    if respelled {
        return None;
    }
    let t = T::deserialize(v).ok()?;
    let same_time = T::TIME.is_none_or(|key| t.time() == time_field(v, &[key]));
    same_time.then_some(t)
}

/// A string of a typed envelope as `util::str_field` reads it: trimmed, placeholders absent.
pub(crate) fn clean(s: String) -> Option<String> {
    scalar_string(&Value::String(s))
}
