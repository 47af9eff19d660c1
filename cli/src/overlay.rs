//! The ports `nbaops plan` runs a function on instead of the writing ones: the ledger as an
//! in-memory overlay over the real one (reads go through to the account, writes stay in this
//! process), and what would have been published (kept by the shared fake notifier). Together with the guard
//! forced to dry-run and the read-only SDK clients, a plan changes nothing in the account.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use nbaops_shared::error::Result;
use nbaops_shared::ports::{DayItem, Expect, Ledger, LedgerWrite};
use serde::Serialize;
use serde_json::Value;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An item as the overlay holds it: `None` is a delete that hides the real item.
#[derive(Debug, Clone)]
pub struct Held {
    data: Option<Value>,
    expires_at: Option<i64>,
    day: Option<String>,
}

/// The real ledger, read; every write kept here.
pub struct OverlayLedger {
    pub real: Box<dyn Ledger>,
    held: Arc<Mutex<BTreeMap<(String, String), Held>>>,
}

/// What a plan wrote to its overlay, readable after the ledger went into the function's ports.
#[derive(Clone)]
pub struct Written(Arc<Mutex<BTreeMap<(String, String), Held>>>);

impl Written {
    /// The items the plan wrote under keys starting with `pk_prefix`, in key order.
    pub fn under(&self, pk_prefix: &str) -> Vec<(String, String, Value)> {
        lock(&self.0)
            .iter()
            .filter(|((pk, _), _)| pk.starts_with(pk_prefix))
            .filter_map(|((pk, sk), h)| h.data.clone().map(|d| (pk.clone(), sk.clone(), d)))
            .collect()
    }
}

impl OverlayLedger {
    pub fn over(real: Box<dyn Ledger>) -> OverlayLedger {
        OverlayLedger {
            real,
            held: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    pub fn written(&self) -> Written {
        Written(self.held.clone())
    }

    fn keep(&self, pk: &str, sk: &str, held: Held) {
        lock(&self.held).insert((pk.to_string(), sk.to_string()), held);
    }

    fn overlaid(&self, pk: &str, sk: &str) -> Option<Held> {
        lock(&self.held)
            .get(&(pk.to_string(), sk.to_string()))
            .cloned()
    }
}

#[async_trait]
impl Ledger for OverlayLedger {
    async fn put_if_absent(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: i64,
    ) -> Result<bool> {
        if self.get(pk, sk).await?.is_some() {
            return Ok(false);
        }
        self.keep(
            pk,
            sk,
            Held {
                data: Some(data.clone()),
                expires_at: Some(expires_at),
                day: None,
            },
        );
        Ok(true)
    }

    async fn put(&self, pk: &str, sk: &str, data: &Value, expires_at: Option<i64>) -> Result<()> {
        self.keep(
            pk,
            sk,
            Held {
                data: Some(data.clone()),
                expires_at,
                day: None,
            },
        );
        Ok(())
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Value>> {
        match self.overlaid(pk, sk) {
            Some(h) => Ok(h.data),
            None => self.real.get(pk, sk).await,
        }
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        self.keep(
            pk,
            sk,
            Held {
                data: None,
                expires_at: None,
                day: None,
            },
        );
        Ok(())
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<(String, Value)>> {
        let mut merged: BTreeMap<String, Option<Value>> = self
            .real
            .query(pk, sk_prefix)
            .await?
            .into_iter()
            .map(|(sk, v)| (sk, Some(v)))
            .collect();
        for ((p, s), h) in lock(&self.held).iter() {
            if p == pk && s.starts_with(sk_prefix) {
                merged.insert(s.clone(), h.data.clone());
            }
        }
        Ok(merged
            .into_iter()
            .filter_map(|(sk, v)| v.map(|v| (sk, v)))
            .collect())
    }

    /// All or nothing against what the plan sees (the real items under the overlay). An item
    /// only in the account counts as not expired: its expiry is not read back.
    async fn write_all(&self, writes: &[LedgerWrite]) -> Result<Option<usize>> {
        for (i, w) in writes.iter().enumerate() {
            let held = self.get(&w.pk, &w.sk).await?;
            let expiry = self.overlaid(&w.pk, &w.sk).and_then(|h| h.expires_at);
            let ok = w.expect.is_empty()
                || w.expect.iter().any(|e| match e {
                    Expect::Absent => held.is_none(),
                    Expect::ExpiredBy(t) => held.is_some() && expiry.is_some_and(|x| x <= *t),
                    Expect::Holds(v) => held.as_ref() == Some(v),
                });
            if !ok {
                return Ok(Some(i));
            }
        }
        for w in writes {
            self.keep(
                &w.pk,
                &w.sk,
                Held {
                    data: w.data.clone(),
                    expires_at: w.expires_at,
                    day: w.day.clone(),
                },
            );
        }
        Ok(None)
    }

    async fn put_on_day(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: Option<i64>,
        day: &str,
    ) -> Result<()> {
        self.keep(
            pk,
            sk,
            Held {
                data: Some(data.clone()),
                expires_at,
                day: Some(day.to_string()),
            },
        );
        Ok(())
    }

    async fn query_day(&self, day: &str) -> Result<Vec<DayItem>> {
        let held = lock(&self.held).clone();
        let mut out: Vec<DayItem> = self
            .real
            .query_day(day)
            .await?
            .into_iter()
            .filter(|i| !held.contains_key(&(i.pk.clone(), i.sk.clone())))
            .collect();
        out.extend(held.into_iter().filter_map(|((pk, sk), h)| {
            (h.day.as_deref() == Some(day))
                .then_some(h.data)
                .flatten()
                .map(|data| DayItem { pk, sk, data })
        }));
        out.sort_by(|a, b| b.sk.cmp(&a.sk));
        Ok(out)
    }
}

/// One message a plan would have published.
#[derive(Debug, Clone, Serialize)]
pub struct WouldPublish {
    pub topic_arn: String,
    pub subject: String,
    pub message: Value,
}

impl WouldPublish {
    /// What the shared fake notifier kept (a plan publishes to it: nothing is sent), with the
    /// message as JSON when it is JSON.
    pub fn of(p: nbaops_shared::fakes::Published) -> WouldPublish {
        WouldPublish {
            message: serde_json::from_str(&p.message).unwrap_or_else(|_| Value::from(p.message)),
            topic_arn: p.topic_arn,
            subject: p.subject,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A "real" ledger for the tests: an overlay over nothing is itself a plain in-memory ledger.
    struct Empty;
    #[async_trait]
    impl Ledger for Empty {
        async fn put_if_absent(&self, _: &str, _: &str, _: &Value, _: i64) -> Result<bool> {
            unreachable!("a plan never writes through")
        }
        async fn put(&self, _: &str, _: &str, _: &Value, _: Option<i64>) -> Result<()> {
            unreachable!("a plan never writes through")
        }
        async fn get(&self, pk: &str, _: &str) -> Result<Option<Value>> {
            Ok((pk == "real").then(|| json!({"real": true})))
        }
        async fn delete(&self, _: &str, _: &str) -> Result<()> {
            unreachable!("a plan never writes through")
        }
        async fn query(&self, pk: &str, _: &str) -> Result<Vec<(String, Value)>> {
            Ok(if pk == "real" {
                vec![("a".into(), json!({"real": true}))]
            } else {
                vec![]
            })
        }
        async fn write_all(&self, _: &[LedgerWrite]) -> Result<Option<usize>> {
            unreachable!("a plan never writes through")
        }
        async fn put_on_day(
            &self,
            _: &str,
            _: &str,
            _: &Value,
            _: Option<i64>,
            _: &str,
        ) -> Result<()> {
            unreachable!("a plan never writes through")
        }
        async fn query_day(&self, day: &str) -> Result<Vec<DayItem>> {
            Ok(vec![DayItem {
                pk: "audit#r".into(),
                sk: format!("{day}T01"),
                data: json!(1),
            }])
        }
    }

    #[tokio::test]
    async fn reads_go_through_and_writes_stay_in_the_overlay() {
        let o = OverlayLedger::over(Box::new(Empty));
        assert_eq!(
            o.get("real", "x").await.unwrap(),
            Some(json!({"real": true}))
        );
        // A real item is there for a conditional write, and a delete hides it.
        assert!(!o.put_if_absent("real", "x", &json!(2), 9).await.unwrap());
        o.delete("real", "x").await.unwrap();
        assert_eq!(o.get("real", "x").await.unwrap(), None);
        assert!(o.put_if_absent("real", "x", &json!(2), 9).await.unwrap());
        o.put("real", "b", &json!(3), None).await.unwrap();
        let q = o.query("real", "").await.unwrap();
        assert_eq!(
            q,
            vec![
                ("a".into(), json!({"real": true})),
                ("b".into(), json!(3)),
                ("x".into(), json!(2))
            ]
        );
        let refused = o
            .write_all(&[
                LedgerWrite::put("n", "1", json!(1), None),
                LedgerWrite::put("real", "b", json!(4), None).expecting(vec![Expect::Absent]),
            ])
            .await
            .unwrap();
        assert_eq!(refused, Some(1));
        assert_eq!(o.get("n", "1").await.unwrap(), None, "all or nothing");
        o.put_on_day("audit#s", "2026-06-17T02", &json!(5), None, "2026-06-17")
            .await
            .unwrap();
        let day = o.query_day("2026-06-17").await.unwrap();
        let sks: Vec<&str> = day.iter().map(|i| i.sk.as_str()).collect();
        assert_eq!(sks, ["2026-06-17T02", "2026-06-17T01"], "newest first");
        assert_eq!(o.written().under("audit#").len(), 1);
    }
}
