//! Signed acknowledgement links: `<function URL>?key=<dedup key>&exp=<epoch s>&sig=<hex>` where
//! `sig = HMAC-SHA256(signing key, "<dedup key>\n<exp>")`. Verified in constant time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], dedup_key: &str, exp: i64) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(dedup_key.as_bytes());
    m.update(b"\n");
    m.update(exp.to_string().as_bytes());
    Some(m)
}

/// Hex signature of (key, expiry).
pub fn sign(signing_key: &[u8], dedup_key: &str, exp: i64) -> String {
    mac(signing_key, dedup_key, exp)
        .map(|m| hex(&m.finalize().into_bytes()))
        .unwrap_or_default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The acknowledgement link for `dedup_key`, valid until `exp`.
pub fn ack_link(base_url: &str, signing_key: &[u8], dedup_key: &str, exp: DateTime<Utc>) -> String {
    let exp = exp.timestamp();
    let sep = if base_url.contains('?') { '&' } else { '?' };
    format!(
        "{base_url}{sep}key={}&exp={exp}&sig={}",
        encode(dedup_key),
        sign(signing_key, dedup_key, exp)
    )
}

/// The decoded query parameters of a link (what a function URL hands over as
/// `queryStringParameters`).
pub fn query_of(link: &str) -> BTreeMap<String, String> {
    link.split_once('?')
        .map(|(_, q)| q)
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Forged,
    Expired,
}

/// The dedup key the link acknowledges, if its signature holds and it has not expired.
pub fn verify(
    signing_key: &[u8],
    query: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<String, Refusal> {
    let (Some(key), Some(exp), Some(sig)) = (query.get("key"), query.get("exp"), query.get("sig"))
    else {
        return Err(Refusal::Missing);
    };
    let exp: i64 = exp.parse().map_err(|_| Refusal::Forged)?;
    let sig = unhex(sig).ok_or(Refusal::Forged)?;
    let m = mac(signing_key, key, exp).ok_or(Refusal::Forged)?;
    // Signature first: an expired link is only reported as such when it is genuine.
    m.verify_slice(&sig).map_err(|_| Refusal::Forged)?;
    if now.timestamp() > exp {
        return Err(Refusal::Expired);
    }
    Ok(key.clone())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Duration;

    const KEY: &[u8] = b"test-signing-key-0123456789";

    #[test]
    fn valid_forged_and_expired() {
        let now = Utc::now();
        let dedup = "capacity-exhausted#asg:nbaops-dev-web";
        let link = ack_link(
            "https://abc.lambda-url.us-east-1.on.aws/",
            KEY,
            dedup,
            now + Duration::hours(1),
        );
        let q = query_of(&link);
        assert_eq!(q["key"], dedup, "{link}");
        assert_eq!(verify(KEY, &q, now), Ok(dedup.to_string()));

        // Another key, a changed expiry, a changed signature, another signing key: forged.
        let mut other = q.clone();
        other.insert("key".into(), "something-else".into());
        assert_eq!(verify(KEY, &other, now), Err(Refusal::Forged));
        let mut later = q.clone();
        later.insert(
            "exp".into(),
            (now + Duration::days(30)).timestamp().to_string(),
        );
        assert_eq!(verify(KEY, &later, now), Err(Refusal::Forged));
        let mut bad = q.clone();
        bad.insert("sig".into(), "00".repeat(32));
        assert_eq!(verify(KEY, &bad, now), Err(Refusal::Forged));
        bad.insert("sig".into(), "zz".into());
        assert_eq!(verify(KEY, &bad, now), Err(Refusal::Forged));
        assert_eq!(
            verify(b"another-key-entirely", &q, now),
            Err(Refusal::Forged)
        );
        assert_eq!(verify(KEY, &BTreeMap::new(), now), Err(Refusal::Missing));

        // Genuine but past its expiry.
        assert_eq!(
            verify(KEY, &q, now + Duration::hours(2)),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["a#b:c/d e?&=%", "plain", "ünï"] {
            assert_eq!(decode(&encode(s)), s);
        }
        assert_eq!(decode("100%"), "100%");
    }
}
