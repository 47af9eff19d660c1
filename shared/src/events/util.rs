//! Small, forgiving accessors over `serde_json::Value`.
//!
//! AWS payloads are full of `null`, `""` and the literal string `"None"` where a
//! value is missing, and the same field is spelled `alarmName` in one delivery and
//! `AlarmName` in another. Every accessor here treats those placeholders as absent
//! and falls back to a case-insensitive key match, so the parsers can simply list
//! the spellings they accept.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde_json::{Map, Value};

/// Strings that mean "no value" in AWS payloads.
pub(crate) fn is_placeholder(s: &str) -> bool {
    let t = s.trim();
    t.is_empty()
        || t.eq_ignore_ascii_case("none")
        || t.eq_ignore_ascii_case("null")
        || t.eq_ignore_ascii_case("undefined")
}

/// Value under `key`: exact match first, then ASCII case-insensitive. `null` counts as absent.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    let found = obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })?;
    if found.is_null() {
        None
    } else {
        Some(found)
    }
}

/// First present value among `keys`.
pub(crate) fn any<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    keys.iter().find_map(|k| get(v, k))
}

/// Object under one of `keys`; a JSON object encoded as a string is *not* decoded here.
pub(crate) fn obj_field<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    any(v, keys).filter(|x| x.is_object())
}

/// Array under one of `keys` (empty slice when absent or not an array).
pub(crate) fn arr_field<'a>(v: &'a Value, keys: &[&str]) -> &'a [Value] {
    any(v, keys)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Scalar rendered as a string; placeholders, objects and arrays are absent.
pub(crate) fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !is_placeholder(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// First non-placeholder string (numbers and booleans are rendered) among `keys`.
pub(crate) fn str_field(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .filter_map(|k| get(v, k))
        .find_map(scalar_string)
}

/// Parse an amount such as `85.12`, `"85.12"`, `"$1,085.12"`, `"80%"` or
/// `{"Amount": "85.12", "Unit": "USD"}`.
pub(crate) fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64().filter(|f| f.is_finite()),
        Value::String(s) => parse_amount(s),
        Value::Object(_) => any(v, &["amount", "value"]).and_then(number_of),
        _ => None,
    }
}

/// First parsable number among `keys`.
pub(crate) fn f64_field(v: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter().filter_map(|k| get(v, k)).find_map(number_of)
}

/// First non-negative integer that fits in `u32` among `keys`.
pub(crate) fn u32_field(v: &Value, keys: &[&str]) -> Option<u32> {
    f64_field(v, keys).and_then(|f| {
        if f >= 0.0 && f <= f64::from(u32::MAX) && f.fract() == 0.0 {
            Some(f as u32)
        } else {
            None
        }
    })
}

/// Strip currency symbols, codes, thousands separators and a trailing `%`.
pub(crate) fn parse_amount(s: &str) -> Option<f64> {
    let t = s.trim();
    if is_placeholder(t) {
        return None;
    }
    let cleaned: String = t
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == '-')
        .collect();
    if cleaned.is_empty() || !cleaned.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    cleaned.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// Parse the timestamp spellings AWS uses:
/// RFC 3339 (`Z` or `+00:00`), `+0000` offsets, no zone at all (taken as UTC),
/// a space instead of `T`, a bare date, and epoch seconds/milliseconds as numbers.
pub(crate) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let t = s.trim();
    if is_placeholder(t) {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
        "%Y-%m-%dT%H:%M:%S%.f %z",
        "%Y-%m-%d %H:%M:%S%.f %z",
    ] {
        if let Ok(dt) = DateTime::parse_from_str(t, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    let naive = t
        .strip_suffix(" UTC")
        .or_else(|| t.strip_suffix(" GMT"))
        .or_else(|| t.strip_suffix('Z'))
        .unwrap_or(t);
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(ndt) = NaiveDateTime::parse_from_str(naive, fmt) {
            return Some(Utc.from_utc_datetime(&ndt));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(naive, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .map(|ndt| Utc.from_utc_datetime(&ndt));
    }
    None
}

/// A timestamp value: string (see [`parse_time`]) or epoch number (seconds, or
/// milliseconds when it is too large to be seconds).
pub(crate) fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::String(s) => parse_time(s),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if !f.is_finite() || f < 0.0 {
                return None;
            }
            let millis = if f > 1e11 { f } else { f * 1000.0 };
            if millis > 9.0e15 {
                return None;
            }
            DateTime::<Utc>::from_timestamp_millis(millis as i64)
        }
        _ => None,
    }
}

/// First parsable timestamp among `keys`.
pub(crate) fn time_field(v: &Value, keys: &[&str]) -> Option<DateTime<Utc>> {
    keys.iter().filter_map(|k| get(v, k)).find_map(time_of)
}

/// Millisecond RFC 3339 rendering used inside composite event ids.
pub(crate) fn stamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The parts of `arn:partition:service:region:account:resource`.
pub(crate) struct Arn<'a> {
    pub service: &'a str,
    pub region: &'a str,
    pub account: &'a str,
    pub resource: &'a str,
}

pub(crate) fn parse_arn(s: &str) -> Option<Arn<'_>> {
    let mut parts = s.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let _partition = parts.next()?;
    Some(Arn {
        service: parts.next()?,
        region: parts.next()?,
        account: parts.next()?,
        resource: parts.next()?,
    })
}

fn non_empty(s: &str) -> Option<String> {
    if is_placeholder(s) {
        None
    } else {
        Some(s.to_string())
    }
}

pub(crate) fn arn_region(s: &str) -> Option<String> {
    parse_arn(s).and_then(|a| non_empty(a.region))
}

pub(crate) fn arn_account(s: &str) -> Option<String> {
    parse_arn(s)
        .map(|a| a.account)
        .filter(|a| a.len() == 12 && a.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

/// Last `/`- or `:`-separated segment of an ARN's resource part.
pub(crate) fn arn_tail(s: &str) -> Option<String> {
    let resource = parse_arn(s).map(|a| a.resource).unwrap_or(s);
    resource.rsplit(['/', ':']).next().and_then(non_empty)
}

/// JSON object, or a JSON object encoded in a string.
pub(crate) fn as_object_or_json_string(v: &Value) -> Option<Value> {
    match v {
        Value::Object(_) => Some(v.clone()),
        Value::String(s) => match serde_json::from_str::<Value>(s.trim()) {
            Ok(inner @ Value::Object(_)) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}

/// Short description of a JSON value's shape, for NotForMe reasons.
pub(crate) fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {:?}", truncate(s, 60)),
        Value::Array(a) => format!("array of {} element(s)", a.len()),
        Value::Object(m) if m.is_empty() => "empty object".to_string(),
        Value::Object(m) => format!("object with keys [{}]", key_list(m)),
    }
}

pub(crate) fn key_list(m: &Map<String, Value>) -> String {
    let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let more = keys.len().saturating_sub(8);
    keys.truncate(8);
    let mut out = keys
        .iter()
        .map(|k| truncate(k, 40))
        .collect::<Vec<_>>()
        .join(", ");
    if more > 0 {
        out.push_str(&format!(", … {more} more"));
    }
    out
}

/// At most `max` characters, with an ellipsis when cut; never splits a char.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_absent() {
        let v = json!({"a": null, "b": "", "c": "None", "d": "null", "e": " x ", "F": 3});
        for k in ["a", "b", "c", "d", "zz"] {
            assert_eq!(str_field(&v, &[k]), None, "{k}");
        }
        assert_eq!(str_field(&v, &["a", "e"]).as_deref(), Some("x"));
        assert_eq!(str_field(&v, &["f"]).as_deref(), Some("3"));
    }

    #[test]
    fn times() {
        let want = Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap()
            + chrono::Duration::milliseconds(123);
        for s in [
            "2026-11-25T20:01:02.123+0000",
            "2026-11-25T20:01:02.123Z",
            "2026-11-25T20:01:02.123+00:00",
            "2026-11-25 20:01:02.123",
            "2026-11-25T20:01:02.123",
            "2026-11-25T21:01:02.123+0100",
        ] {
            assert_eq!(parse_time(s), Some(want), "{s}");
        }
        assert_eq!(
            parse_time("2026-11-25 20:01:02"),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap())
        );
        assert_eq!(
            parse_time("2026-11-25T20:01:02Z"),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 20, 1, 2).unwrap())
        );
        assert_eq!(
            parse_time("2026-11-25"),
            Some(Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap())
        );
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("None"), None);
        assert_eq!(
            time_of(&json!(1_795_723_262_123_i64)),
            DateTime::<Utc>::from_timestamp_millis(1_795_723_262_123)
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("$1,085.12"), Some(1085.12));
        assert_eq!(parse_amount("80%"), Some(80.0));
        assert_eq!(parse_amount("85.12 USD"), Some(85.12));
        assert_eq!(parse_amount("n/a"), None);
        assert_eq!(
            number_of(&json!({"Amount": "100.0", "Unit": "USD"})),
            Some(100.0)
        );
        assert_eq!(u32_field(&json!({"p": 300.0}), &["p"]), Some(300));
        assert_eq!(u32_field(&json!({"p": -1}), &["p"]), None);
    }

    #[test]
    fn arns() {
        let a = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-web-cpu-high";
        assert_eq!(arn_region(a).as_deref(), Some("us-east-1"));
        assert_eq!(arn_account(a).as_deref(), Some("123456789012"));
        assert_eq!(arn_tail(a).as_deref(), Some("nbaops-dev-web-cpu-high"));
        assert_eq!(
            arn_tail(
                "arn:aws:scheduler:us-east-1:123456789012:schedule/default/nbaops-dev-offhours"
            )
            .as_deref(),
            Some("nbaops-dev-offhours")
        );
        assert_eq!(
            arn_account("arn:aws:ce::123456789012:anomalymonitor/x").as_deref(),
            Some("123456789012")
        );
        assert!(parse_arn("not-an-arn").is_none());
    }

    #[test]
    fn truncate_is_char_safe() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 5), "ab");
    }
}
