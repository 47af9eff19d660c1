//! In-memory `BackupStore`: buckets of objects, a bucket that refuses to be read, a log of the
//! prefixes listed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{lock, Shared};
use crate::error::{NbaopsError, Result};
use crate::ports::{BackupStore, StoredObject};

#[derive(Default)]
pub struct FakeBackupStore {
    /// bucket -> key -> object
    pub buckets: Mutex<BTreeMap<String, BTreeMap<String, StoredObject>>>,
    /// Buckets whose listing fails as an AccessDenied would.
    pub refuse: Mutex<BTreeSet<String>>,
    /// (bucket, prefix) of every list call.
    pub listed: Mutex<Vec<(String, String)>>,
}

impl FakeBackupStore {
    pub fn put(&self, bucket: &str, key: &str, at: DateTime<Utc>, class: &str) {
        lock(&self.buckets)
            .entry(bucket.into())
            .or_default()
            .insert(
                key.into(),
                StoredObject {
                    key: key.into(),
                    size: 1024,
                    last_modified: Some(at),
                    storage_class: class.into(),
                },
            );
    }
    pub fn remove(&self, bucket: &str, key: &str) {
        if let Some(b) = lock(&self.buckets).get_mut(bucket) {
            b.remove(key);
        }
    }
}

#[async_trait]
impl BackupStore for FakeBackupStore {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<StoredObject>> {
        lock(&self.listed).push((bucket.into(), prefix.into()));
        if lock(&self.refuse).contains(bucket) {
            return Err(NbaopsError::Dependency {
                service: "s3",
                message: format!("AccessDenied: list of {bucket}"),
                retryable: false,
            });
        }
        match lock(&self.buckets).get(bucket) {
            None => Err(NbaopsError::Dependency {
                service: "s3",
                message: format!("NoSuchBucket: {bucket}"),
                retryable: false,
            }),
            Some(b) => Ok(b
                .values()
                .filter(|o| o.key.starts_with(prefix))
                .cloned()
                .collect()),
        }
    }
}

#[async_trait]
impl<T: BackupStore> BackupStore for Shared<T> {
    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<StoredObject>> {
        self.0.list(bucket, prefix).await
    }
}
