//! The demo's story, one file per function. A new function adds `scenes/<function>.rs` with a
//! `scenes()` list and one line in [`scenes`] below.

mod alert_router;
mod backup;
mod cost;
mod failover;
mod offhours;
mod pg;
mod posture;
mod scale_on_alarm;

/// One step of the story: a fixture, optionally with a change to the world before it.
pub struct Scene {
    pub title: &'static str,
    pub function: &'static str,
    pub fixture: &'static str,
    pub before: Before,
}

pub enum Before {
    /// SQL run on the demo PostgreSQL (database, statement).
    Sql(&'static str, &'static str),
    Nothing,
    Param(&'static str, &'static str),
    DeleteParam(&'static str),
    TagGroup(&'static str, &'static str, &'static str),
    UntagGroup(&'static str, &'static str),
    /// The managed groups' CPU (AWS/EC2 CPUUtilization) at this percent, one datapoint a minute
    /// for the last 20 minutes on the demo clock: what the off-peak checks read.
    Cpu(f64),
    /// Objects put in the demo backup bucket ([`crate::demo::BACKUP_BUCKET`], created if absent):
    /// (key, S3 storage class as S3 names it); `{date}` / `{month}` in a key become the demo
    /// clock's day / month. Stamped with the demo clock (moto runs on it).
    BackupObjects(&'static [(&'static str, &'static str)]),
}

/// Every scene, in filing order of the functions.
pub fn scenes() -> Vec<Scene> {
    let mut all = Vec::new();
    all.extend(scale_on_alarm::scenes());
    all.extend(pg::scenes());
    all.extend(alert_router::scenes());
    all.extend(cost::scenes());
    all.extend(failover::scenes());
    all.extend(backup::scenes());
    all.extend(offhours::scenes());
    all.extend(posture::scenes());
    all
}
