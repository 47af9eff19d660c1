//! Memcached grows on what the engine publishes (issue #17). Memcached has no memory percentage
//! (DatabaseMemoryUsagePercentage is Valkey/Redis OSS only); it publishes BytesUsedForCacheItems
//! per node (dimensions CacheClusterId + CacheNodeId,
//! https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/CacheMetrics.Memcached.html). Before
//! the cache alarm adds a node, the last 15 minutes of that metric confirm that a node really is
//! above `scale.cache.memory_high_percent` (75 %) of its node type's cache memory
//! (`scale.cache.node_memory`, max_cache_memory per node type,
//! https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/ParameterGroups.Memcached.html#ParameterGroups.Memcached.NodeSpecific).
//! When the metric is missing (or unreadable), the alarm is the evidence and the record says so.

use std::collections::BTreeMap;

use chrono::Duration;

use nbaops_shared::ports::{CacheClusterState, MetricQuery};
use nbaops_shared::runtime::Work;

use crate::handler::ScaleOnAlarm;

/// The verdict on the nodes' latest Maximum of BytesUsedForCacheItems.
#[derive(Debug, Clone, PartialEq)]
pub enum CacheVerdict {
    /// No node published a datapoint in the window.
    Missing,
    /// This node is above the percent (the fullest such node).
    Over { node: String, percent: f64 },
    /// Every node that published is at or below the percent; the fullest of them.
    Under { node: String, percent: f64 },
}

/// `latest`: node id -> its latest Maximum in bytes (nodes without a datapoint absent).
pub fn verdict(
    latest: &BTreeMap<String, f64>,
    node_memory: u64,
    high_percent: f64,
) -> CacheVerdict {
    let fullest = latest
        .iter()
        .map(|(n, b)| (n.clone(), b / node_memory as f64 * 100.0))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match fullest {
        None => CacheVerdict::Missing,
        Some((node, percent)) if percent > high_percent => CacheVerdict::Over { node, percent },
        Some((node, percent)) => CacheVerdict::Under { node, percent },
    }
}

/// Memcached node ids as ElastiCache numbers them: 0001, 0002, ...
pub fn node_ids(nodes: i32) -> Vec<String> {
    (1..=nodes.max(1)).map(|n| format!("{n:04}")).collect()
}

impl ScaleOnAlarm {
    /// True when a node is confirmed above the percent, or when nothing can be confirmed (the
    /// alarm is then acted on, and the note says why); false when every node is below it.
    pub(crate) async fn cache_node_is_full(&self, c: &CacheClusterState, w: &mut Work<'_>) -> bool {
        let ctx = w.ctx;
        let cap = &ctx.cfg().scale.capacity;
        let resource = format!("cache:{}", c.id);
        let Some(&memory) = cap.cache_node_memory.get(&c.node_type) else {
            w.note(format!(
                "{resource}: node type {} is not in scale.cache.node_memory: BytesUsedForCacheItems cannot be compared, acting on the alarm",
                c.node_type
            ));
            return true;
        };
        let now = ctx.now();
        let mut latest = BTreeMap::new();
        for node in node_ids(c.num_nodes) {
            let q = MetricQuery {
                namespace: "AWS/ElastiCache".into(),
                metric: "BytesUsedForCacheItems".into(),
                dimensions: [
                    ("CacheClusterId".to_string(), c.id.clone()),
                    ("CacheNodeId".to_string(), node.clone()),
                ]
                .into(),
                statistic: "Maximum".into(),
                from: now - Duration::minutes(15),
                to: now,
                period_seconds: 300,
            };
            match self.cw.statistics(&q).await {
                Ok(points) => {
                    if let Some((_, bytes)) = points.last() {
                        latest.insert(node, *bytes);
                    }
                }
                Err(e) => {
                    w.note(format!(
                        "{resource}: BytesUsedForCacheItems unreadable ({e}): acting on the alarm"
                    ));
                    return true;
                }
            }
        }
        let high = cap.cache_memory_high_percent;
        match verdict(&latest, memory, high) {
            CacheVerdict::Missing => {
                w.note(format!(
                    "{resource}: no BytesUsedForCacheItems datapoint in the last 15 min: acting on the alarm"
                ));
                true
            }
            CacheVerdict::Over { node, percent } => {
                w.note(format!(
                    "{resource}: node {node} holds {percent:.1} % of {} ({memory} bytes) > {high} %: confirmed",
                    c.node_type
                ));
                true
            }
            CacheVerdict::Under { node, percent } => {
                w.note(format!(
                    "{resource}: the fullest node {node} holds {percent:.1} % of {} ({memory} bytes), not above {high} %: no node added",
                    c.node_type
                ));
                false
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};
    use nbaops_shared::fakes::*;
    use nbaops_shared::ports::*;
    use nbaops_shared::runtime::{dispatch, Ctx, Deps, Invocation, InvocationReport};
    use serde_json::Value;

    const MIB: f64 = 1024.0 * 1024.0;

    #[test]
    fn verdicts() {
        let mem = 512 << 20;
        let m = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(n, b)| (n.to_string(), *b)).collect()
        };
        assert_eq!(verdict(&m(&[]), mem, 75.0), CacheVerdict::Missing);
        assert_eq!(
            verdict(
                &m(&[("0001", 100.0 * MIB), ("0002", 400.0 * MIB)]),
                mem,
                75.0
            ),
            CacheVerdict::Over {
                node: "0002".into(),
                percent: 400.0 / 512.0 * 100.0
            }
        );
        // Exactly 75 % is not above it (the alarm is GreaterThanThreshold).
        assert!(matches!(
            verdict(&m(&[("0001", 384.0 * MIB)]), mem, 75.0),
            CacheVerdict::Under { .. }
        ));
        assert_eq!(node_ids(3), vec!["0001", "0002", "0003"]);
    }

    const CACHE_ALARM: &str =
        include_str!("../../../events/cloudwatch-alarm/sns-memcached-memory-alarm.json");

    struct World {
        deps: &'static Deps,
        f: &'static ScaleOnAlarm,
        cache: &'static FakeElastiCache,
        cw: &'static FakeCloudWatch,
    }

    fn world() -> World {
        let t = test_deps(
            crate::handler::FUNCTION,
            &[("NBAOPS_SCALE__CACHE__CLUSTERS", "nbaops-dev-cache")],
        )
        .unwrap();
        let cache = leak(FakeElastiCache::with(vec![CacheClusterState {
            id: "nbaops-dev-cache".into(),
            arn: None,
            engine: "memcached".into(),
            node_type: "cache.t3.micro".into(),
            num_nodes: 2,
            status: "available".into(),
            tags: Tags::new(),
        }]));
        let cw = leak(FakeCloudWatch::default());
        World {
            deps: t.deps,
            f: leak(ScaleOnAlarm {
                asg: Box::new(FakeAutoScaling::with(vec![])),
                rds: Box::new(FakeRds::with(vec![])),
                cache: Box::new(Shared(cache)),
                cw: Box::new(Shared(cw)),
            }),
            cache,
            cw,
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).unwrap()
    }

    fn used(w: &World, node: &str, mib: f64) {
        w.cw.add_points(
            "AWS/ElastiCache",
            "BytesUsedForCacheItems",
            &[
                ("CacheClusterId", "nbaops-dev-cache"),
                ("CacheNodeId", node),
            ],
            &[
                (now() - Duration::minutes(10), mib * MIB * 0.9),
                (now() - Duration::minutes(5), mib * MIB),
            ],
        );
    }

    async fn alarm(w: &World) -> InvocationReport {
        let payload: Value = serde_json::from_str(CACHE_ALARM).unwrap();
        let inv = Invocation::at("req", now());
        dispatch(w.f, payload, &Ctx::of::<ScaleOnAlarm>(w.deps, &inv))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_node_above_75_percent_adds_one_node() {
        let w = world();
        used(&w, "0001", 100.0);
        used(&w, "0002", 420.0); // 82 % of 512 MiB
        let r = alarm(&w).await;
        assert_eq!(
            w.cache.mutations(),
            vec!["set_node_count nbaops-dev-cache 3"],
            "{:?}",
            r.records[0].notes
        );
        assert!(r.records[0].notes.iter().any(|n| n.contains("confirmed")));
    }

    #[tokio::test]
    async fn every_node_below_75_percent_adds_nothing() {
        let w = world();
        used(&w, "0001", 300.0);
        used(&w, "0002", 380.0); // 74 %
        let r = alarm(&w).await;
        assert!(w.cache.mutations().is_empty(), "{:?}", r.records[0].notes);
        assert!(r.records[0].actions.is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("no node added")),
            "{:?}",
            r.records[0].notes
        );
    }

    #[tokio::test]
    async fn no_datapoint_acts_on_the_alarm_and_says_so() {
        let w = world();
        let r = alarm(&w).await;
        assert_eq!(
            w.cache.mutations(),
            vec!["set_node_count nbaops-dev-cache 3"]
        );
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("no BytesUsedForCacheItems datapoint")),
            "{:?}",
            r.records[0].notes
        );
    }
}
