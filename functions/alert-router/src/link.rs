//! Signed acknowledgement and approval links. Acknowledgement:
//! `<function URL>?key=<dedup key>&exp=<epoch s>&kid=<key id>&sig=<hex>` where
//! `sig = HMAC-SHA256(key <kid>, "<kid>\n<dedup key>\n<exp>")`. Verified in constant time.
//!
//! The key id lets the key rotate: links are signed with the current key; the previous key stays
//! accepted for verification (until its links have expired and it is removed from config); a
//! link naming any other key id is refused.
//!
//! Approval (issue #19), with the same keys:
//! `<function URL>?approval=<id>&verdict=approve|deny[&as=<approver>]&exp=<epoch s>&kid=..&sig=..`
//! where `sig = HMAC-SHA256(key <kid>, "nbaops-approval/v1\n<kid>\n<verdict>\n<id>\n<approver>\n<exp>")`:
//! the approver is named in (and bound by) the link; one link per approver and answer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use nbaops_shared::guard::approval::Verdict;

type HmacSha256 = Hmac<Sha256>;

fn mac(key: &[u8], kid: &str, dedup_key: &str, exp: i64) -> Option<HmacSha256> {
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    m.update(kid.as_bytes());
    m.update(b"\n");
    m.update(dedup_key.as_bytes());
    m.update(b"\n");
    m.update(exp.to_string().as_bytes());
    Some(m)
}

/// Hex signature of (key id, dedup key, expiry).
pub fn sign(signing_key: &[u8], kid: &str, dedup_key: &str, exp: i64) -> String {
    mac(signing_key, kid, dedup_key, exp)
        .map(|m| hex(&m.finalize().into_bytes()))
        .unwrap_or_default()
}

/// One signing key and its id.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "SigningKey({})", self.kid)
    }
}

/// The keys links are signed and verified with: the current one (signs and verifies) and,
/// during a rotation, the previous one (verifies only).
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    pub current: Option<SigningKey>,
    pub previous: Option<SigningKey>,
}

impl Keyring {
    pub fn is_empty(&self) -> bool {
        self.current.is_none() && self.previous.is_none()
    }

    fn by_kid(&self, kid: &str) -> Option<&SigningKey> {
        [&self.current, &self.previous]
            .into_iter()
            .flatten()
            .find(|k| k.kid == kid)
    }
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

/// The acknowledgement link for `dedup_key`, signed with `key`, valid until `exp`.
pub fn ack_link(base_url: &str, key: &SigningKey, dedup_key: &str, exp: DateTime<Utc>) -> String {
    let exp = exp.timestamp();
    let sep = if base_url.contains('?') { '&' } else { '?' };
    format!(
        "{base_url}{sep}key={}&exp={exp}&kid={}&sig={}",
        encode(dedup_key),
        encode(&key.kid),
        sign(&key.key, &key.kid, dedup_key, exp)
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
    /// The link names a key id that is neither the current nor the previous key (a rotated-out
    /// key, or made up).
    UnknownKey,
    Forged,
    Expired,
}

/// The dedup key the link acknowledges, if it names a key of the ring, its signature holds under
/// that key and it has not expired.
pub fn verify(
    keys: &Keyring,
    query: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<String, Refusal> {
    let (Some(key), Some(exp), Some(kid), Some(sig)) = (
        query.get("key"),
        query.get("exp"),
        query.get("kid"),
        query.get("sig"),
    ) else {
        return Err(Refusal::Missing);
    };
    let signing = keys.by_kid(kid).ok_or(Refusal::UnknownKey)?;
    let exp: i64 = exp.parse().map_err(|_| Refusal::Forged)?;
    let sig = unhex(sig).ok_or(Refusal::Forged)?;
    let m = mac(&signing.key, kid, key, exp).ok_or(Refusal::Forged)?;
    // Signature first: an expired link is only reported as such when it is genuine.
    m.verify_slice(&sig).map_err(|_| Refusal::Forged)?;
    if now.timestamp() > exp {
        return Err(Refusal::Expired);
    }
    Ok(key.clone())
}

/// An approver's answer a link carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalLink {
    pub verdict: Verdict,
    pub id: String,
    /// The approver the link was made for; `None`: a request anyone with the link may answer.
    pub approver: Option<String>,
}

/// What an approval link signs. It starts with a fixed tag, where an acknowledgement link starts
/// with its key id, so no acknowledgement signature is ever an approval's (and the reverse).
fn approval_mac(key: &[u8], kid: &str, a: &ApprovalLink, exp: i64) -> Option<HmacSha256> {
    let verdict = match a.verdict {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    };
    let mut m = HmacSha256::new_from_slice(key).ok()?;
    for part in [
        APPROVAL_TAG,
        kid,
        verdict,
        &a.id,
        a.approver.as_deref().unwrap_or(""),
    ] {
        m.update(part.as_bytes());
        m.update(b"\n");
    }
    m.update(exp.to_string().as_bytes());
    Some(m)
}

const APPROVAL_TAG: &str = "nbaops-approval/v1";

/// A name or id a link may carry: no line break (the fields are joined by them).
fn plain(s: &str) -> bool {
    !s.contains('\n')
}

/// The approve or deny link of approval `a`, signed with `key`, valid until `exp` (the request's
/// own expiry). `None` when a field could not be signed unambiguously.
pub fn approval_link(
    base_url: &str,
    key: &SigningKey,
    a: &ApprovalLink,
    exp: DateTime<Utc>,
) -> Option<String> {
    if !plain(&a.id) || !a.approver.as_deref().is_none_or(plain) {
        return None;
    }
    let exp = exp.timestamp();
    let sig = hex(&approval_mac(&key.key, &key.kid, a, exp)?
        .finalize()
        .into_bytes());
    let sep = if base_url.contains('?') { '&' } else { '?' };
    let verdict = match a.verdict {
        Verdict::Approve => "approve",
        Verdict::Deny => "deny",
    };
    let by = a
        .approver
        .as_deref()
        .map(|n| format!("&as={}", encode(n)))
        .unwrap_or_default();
    Some(format!(
        "{base_url}{sep}approval={}&verdict={verdict}{by}&exp={exp}&kid={}&sig={sig}",
        encode(&a.id),
        encode(&key.kid),
    ))
}

/// True when the query is an approval link's (it names an approval), whatever its validity.
pub fn is_approval(query: &BTreeMap<String, String>) -> bool {
    query.contains_key("approval")
}

/// The answer an approval link carries, if it names a key of the ring, its signature holds and it
/// has not expired.
pub fn verify_approval(
    keys: &Keyring,
    query: &BTreeMap<String, String>,
    now: DateTime<Utc>,
) -> Result<ApprovalLink, Refusal> {
    let (Some(id), Some(verdict), Some(exp), Some(kid), Some(sig)) = (
        query.get("approval"),
        query.get("verdict"),
        query.get("exp"),
        query.get("kid"),
        query.get("sig"),
    ) else {
        return Err(Refusal::Missing);
    };
    let verdict = match verdict.as_str() {
        "approve" => Verdict::Approve,
        "deny" => Verdict::Deny,
        _ => return Err(Refusal::Forged),
    };
    let link = ApprovalLink {
        verdict,
        id: id.clone(),
        approver: query.get("as").cloned(),
    };
    if !plain(&link.id) || !link.approver.as_deref().is_none_or(plain) {
        return Err(Refusal::Forged);
    }
    let signing = keys.by_kid(kid).ok_or(Refusal::UnknownKey)?;
    let exp: i64 = exp.parse().map_err(|_| Refusal::Forged)?;
    let sig = unhex(sig).ok_or(Refusal::Forged)?;
    let m = approval_mac(&signing.key, kid, &link, exp).ok_or(Refusal::Forged)?;
    m.verify_slice(&sig).map_err(|_| Refusal::Forged)?;
    if now.timestamp() > exp {
        return Err(Refusal::Expired);
    }
    Ok(link)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::Duration;

    const KEY: &[u8] = b"test-signing-key-0123456789";
    const NEW_KEY: &[u8] = b"rotated-signing-key-abcdefghij";
    const BASE: &str = "https://abc.lambda-url.us-east-1.on.aws/";

    fn k(kid: &str, key: &[u8]) -> SigningKey {
        SigningKey {
            kid: kid.into(),
            key: key.to_vec(),
        }
    }

    fn ring(current: SigningKey, previous: Option<SigningKey>) -> Keyring {
        Keyring {
            current: Some(current),
            previous,
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap()
    }

    #[test]
    fn valid_forged_and_expired() {
        let now = now();
        let keys = ring(k("k1", KEY), None);
        let dedup = "capacity-exhausted#asg:nbaops-dev-web";
        let link = ack_link(BASE, &k("k1", KEY), dedup, now + Duration::hours(1));
        let q = query_of(&link);
        assert_eq!(
            (q["key"].as_str(), q["kid"].as_str()),
            (dedup, "k1"),
            "{link}"
        );
        assert_eq!(verify(&keys, &q, now), Ok(dedup.to_string()));

        // Another key, a changed expiry, a changed signature, another signing key: forged.
        let mut other = q.clone();
        other.insert("key".into(), "something-else".into());
        assert_eq!(verify(&keys, &other, now), Err(Refusal::Forged));
        let mut later = q.clone();
        later.insert(
            "exp".into(),
            (now + Duration::days(30)).timestamp().to_string(),
        );
        assert_eq!(verify(&keys, &later, now), Err(Refusal::Forged));
        let mut bad = q.clone();
        bad.insert("sig".into(), "00".repeat(32));
        assert_eq!(verify(&keys, &bad, now), Err(Refusal::Forged));
        bad.insert("sig".into(), "zz".into());
        assert_eq!(verify(&keys, &bad, now), Err(Refusal::Forged));
        let stranger = ring(k("k1", b"another-key-entirely"), None);
        assert_eq!(verify(&stranger, &q, now), Err(Refusal::Forged));
        assert_eq!(verify(&keys, &BTreeMap::new(), now), Err(Refusal::Missing));
        // A link without a key id (the format before key ids) is incomplete.
        let mut no_kid = q.clone();
        no_kid.remove("kid");
        assert_eq!(verify(&keys, &no_kid, now), Err(Refusal::Missing));
        // No key at all: nothing verifies.
        assert_eq!(
            verify(&Keyring::default(), &q, now),
            Err(Refusal::UnknownKey)
        );

        // Genuine but past its expiry.
        assert_eq!(
            verify(&keys, &q, now + Duration::hours(2)),
            Err(Refusal::Expired)
        );
    }

    #[test]
    fn rotation_signs_with_the_new_key_and_still_accepts_the_old_one() {
        let now = now();
        let dedup = "db-down#nbaops-dev-db";
        let exp = now + Duration::hours(24);
        // Issued before the rotation, under k1.
        let old = query_of(&ack_link(BASE, &k("k1", KEY), dedup, exp));
        // The rotation: k2 is current, k1 previous.
        let rotated = ring(k("k2", NEW_KEY), Some(k("k1", KEY)));
        let new = query_of(&ack_link(
            BASE,
            rotated.current.as_ref().unwrap(),
            dedup,
            exp,
        ));
        assert_eq!(new["kid"], "k2");
        assert_ne!(new["sig"], old["sig"]);
        assert_eq!(verify(&rotated, &new, now), Ok(dedup.to_string()));
        // The old link is still accepted while k1 is the previous key...
        assert_eq!(verify(&rotated, &old, now), Ok(dedup.to_string()));
        // ...and expires as it always would.
        assert_eq!(
            verify(&rotated, &old, now + Duration::hours(25)),
            Err(Refusal::Expired)
        );
        // Once k1 is removed from config its links name an unknown key: refused.
        let after = ring(k("k2", NEW_KEY), None);
        assert_eq!(verify(&after, &old, now), Err(Refusal::UnknownKey));
        assert_eq!(verify(&after, &new, now), Ok(dedup.to_string()));
    }

    #[test]
    fn unknown_or_swapped_key_ids_are_refused() {
        let now = now();
        let rotated = ring(k("k2", NEW_KEY), Some(k("k1", KEY)));
        let q = query_of(&ack_link(
            BASE,
            &k("k2", NEW_KEY),
            "k",
            now + Duration::hours(1),
        ));
        // A made-up key id.
        let mut unknown = q.clone();
        unknown.insert("kid".into(), "k3".into());
        assert_eq!(verify(&rotated, &unknown, now), Err(Refusal::UnknownKey));
        // The key id is signed too: relabelling a k2 link as k1 does not verify under k1 ...
        let mut swapped = q.clone();
        swapped.insert("kid".into(), "k1".into());
        assert_eq!(verify(&rotated, &swapped, now), Err(Refusal::Forged));
        // ... and a link forged with a guessed key under a known id is forged.
        let forged = query_of(&ack_link(
            BASE,
            &k("k1", b"guessed-key-0000000000"),
            "k",
            now + Duration::hours(1),
        ));
        assert_eq!(verify(&rotated, &forged, now), Err(Refusal::Forged));
        // An unknown kid is refused even when the link is also expired: nothing is revealed.
        assert_eq!(
            verify(&rotated, &unknown, now + Duration::days(2)),
            Err(Refusal::UnknownKey)
        );
        // Key ids are encoded in the link.
        let odd = query_of(&ack_link(BASE, &k("2026-06_a.b", KEY), "k", now));
        assert_eq!(odd["kid"], "2026-06_a.b");
    }

    #[test]
    fn keys_do_not_show_in_debug_output() {
        let r = ring(k("k2", NEW_KEY), Some(k("k1", KEY)));
        let shown = format!("{r:?}");
        assert!(shown.contains("k2") && shown.contains("k1"), "{shown}");
        assert!(!shown.contains("rotated-signing-key") && !shown.contains("test-signing-key"));
    }

    #[test]
    fn encoding_round_trips() {
        for s in ["a#b:c/d e?&=%", "plain", "ünï"] {
            assert_eq!(decode(&encode(s)), s);
        }
        assert_eq!(decode("100%"), "100%");
        let arn = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:nbaops-dev-pg-health-errors";
        let q = query_of(&ack_link(BASE, &k("k1", KEY), arn, now()));
        assert_eq!(q["key"], arn);
    }
}
