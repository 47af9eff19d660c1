//! Memcached grows on what the engine publishes (issue #17). Memcached has no memory percentage
//! (DatabaseMemoryUsagePercentage is Valkey/Redis OSS only); it publishes BytesUsedForCacheItems
//! per node (dimensions CacheClusterId + CacheNodeId,
//! https://docs.aws.amazon.com/AmazonElastiCache/latest/dg/CacheMetrics.Memcached.html). Before
//! the cache alarm adds a node, the last 15 minutes of that metric confirm that a node really is
//! above `scale.cache.memory_high_percent` (75 %) of its node type's cache memory
//! (`scale.cache.node_memory`, max_cache_memory per node type,
//! https://docs.aws.amazon.com/AmazonElastiCache/latest/mem-ug/ParameterGroups.Memcached.html#ParameterGroups.Memcached.NodeSpecific).
//! When the metric is missing (or unreadable), the alarm is the evidence and the record says so.
//!
//! Scale-in, only when configured (`scale.cache.scale_in`, default off): the off-peak task removes
//! the newest node when every node published and the cluster's data, spread over one node less,
//! stays at or below `scale.cache.scale_in_below_percent` (50 %) of their cache memory, never
//! below `scale.cache.min_nodes`. Without a datapoint for every node there is no scale-in:
//! capacity is never removed on missing evidence. The node to remove is named
//! (ModifyCacheCluster's CacheNodeIdsToRemove), with the node ids the cluster reports.

use std::collections::BTreeMap;

use chrono::Duration;

use serde_json::json;

use nbaops_shared::alerts::Severity;
use nbaops_shared::guard::{Bounds, Explanation, Observation, ProposedAction};
use nbaops_shared::ports::{CacheClusterState, MetricQuery};
use nbaops_shared::runtime::Work;
use nbaops_shared::Result;

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

/// What the off-peak task does with one cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum ScaleIn {
    Remove { node: String, projected: f64 },
    Keep(String),
}

/// `ids`: the cluster's node ids; `latest`: node id -> latest Maximum of BytesUsedForCacheItems.
pub fn plan_scale_in(
    ids: &[String],
    latest: &BTreeMap<String, f64>,
    min_nodes: i32,
    node_memory: u64,
    below_percent: f64,
) -> ScaleIn {
    let nodes = ids.len() as i32;
    if nodes <= min_nodes {
        return ScaleIn::Keep(format!(
            "{nodes} node(s), scale.cache.min_nodes is {min_nodes}"
        ));
    }
    if let Some(silent) = ids.iter().find(|n| !latest.contains_key(*n)) {
        return ScaleIn::Keep(format!(
            "no BytesUsedForCacheItems datapoint for node {silent}: no scale-in without evidence"
        ));
    }
    let total: f64 = ids.iter().filter_map(|n| latest.get(n)).sum();
    let projected = total / ((nodes - 1) as f64 * node_memory as f64) * 100.0;
    if projected > below_percent {
        return ScaleIn::Keep(format!(
            "in {} node(s) the data would fill {projected:.1} %, above {below_percent} %",
            nodes - 1
        ));
    }
    // The newest node (the highest id) goes.
    let node = ids.iter().max().cloned().unwrap_or_default();
    ScaleIn::Remove { node, projected }
}

impl ScaleOnAlarm {
    /// The latest Maximum of BytesUsedForCacheItems of each node over the last 15 minutes
    /// (nodes without a datapoint absent).
    async fn latest_bytes(
        &self,
        cluster: &str,
        ids: &[String],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<BTreeMap<String, f64>> {
        let mut latest = BTreeMap::new();
        for node in ids {
            let q = MetricQuery {
                namespace: "AWS/ElastiCache".into(),
                metric: "BytesUsedForCacheItems".into(),
                dimensions: [
                    ("CacheClusterId".to_string(), cluster.to_string()),
                    ("CacheNodeId".to_string(), node.clone()),
                ]
                .into(),
                statistic: "Maximum".into(),
                from: now - Duration::minutes(15),
                to: now,
                period_seconds: 300,
            };
            if let Some((_, bytes)) = self.cw.statistics(&q).await?.last() {
                latest.insert(node.clone(), *bytes);
            }
        }
        Ok(latest)
    }

    /// The node ids ElastiCache reports, or 0001..000n when it lists none.
    async fn ids_of(&self, c: &CacheClusterState) -> Result<Vec<String>> {
        let ids = self.cache.node_ids(&c.id).await?;
        Ok(if ids.is_empty() {
            node_ids(c.num_nodes)
        } else {
            ids
        })
    }

    /// The off-peak task's Memcached step: one node less when configured and the data fits.
    /// A failure to read is noted and removes nothing.
    pub(crate) async fn cache_scale_in(&self, id: &str, w: &mut Work<'_>) {
        if let Err(e) = self.try_cache_scale_in(id, w).await {
            w.note(format!("cache:{id}: no scale-in ({e})"));
        }
    }

    async fn try_cache_scale_in(&self, id: &str, w: &mut Work<'_>) -> Result<()> {
        let ctx = w.ctx;
        let scale = &ctx.cfg().scale;
        let cap = &scale.capacity;
        let resource = format!("cache:{id}");
        let Some(c) = self.cache.describe_cluster(id).await? else {
            w.note(format!("{resource} does not exist: no scale-in"));
            return Ok(());
        };
        if c.engine != "memcached" || c.status != "available" {
            w.note(format!(
                "{resource} is {} '{}': no scale-in",
                c.engine, c.status
            ));
            return Ok(());
        }
        let Some(&memory) = cap.cache_node_memory.get(&c.node_type) else {
            w.note(format!(
                "{resource}: node type {} is not in scale.cache.node_memory: no scale-in",
                c.node_type
            ));
            return Ok(());
        };
        let ids = self.ids_of(&c).await?;
        let latest = self.latest_bytes(id, &ids, ctx.now()).await?;
        let (node, projected) = match plan_scale_in(
            &ids,
            &latest,
            cap.cache_min_nodes,
            memory,
            cap.cache_scale_in_below_percent,
        ) {
            ScaleIn::Keep(why) => {
                w.note(format!("{resource}: no scale-in: {why}"));
                return Ok(());
            }
            ScaleIn::Remove { node, projected } => (node, projected),
        };
        let from = ids.len() as i32;
        let to = from - 1;
        let action = ProposedAction {
            action: "cache.remove_node".into(),
            resource: resource.clone(),
            tags: c.tags.clone(),
            reason: format!(
                "off-peak: the data of {from} node(s) fits in {to} at {projected:.1} % (<= {} %)",
                cap.cache_scale_in_below_percent
            ),
            severity: Severity::P4,
            disruptive: false,
            bounds: Some(Bounds {
                proposed: to as f64,
                min: cap.cache_min_nodes as f64,
                max: scale.cache_max_nodes as f64,
            }),
            // Shared with the addition: a removal and an addition never follow each other closely.
            cooldown_key: "cache.nodes".into(),
            cooldown_seconds: scale.cache_cooldown_seconds,
            before: json!({"nodes": from}),
            after: json!({"nodes": to, "remove": [node]}),
            explanation: Explanation::new(
                "remove a node from",
                "Removed a node from",
                format!("{id} {from} → {to} ({node})"),
                "SPEC 2.5 off-peak Memcached scale-in",
            )
            .observe(Observation::against(
                "data on one node less",
                projected,
                "%",
                "<=",
                cap.cache_scale_in_below_percent,
            ))
            .observe(Observation::against(
                "nodes after",
                to as f64,
                "",
                ">=",
                cap.cache_min_nodes as f64,
            ))
            .key("scale.cache.scale_in_below_percent")
            .key("scale.cache.min_nodes"),
        };
        let remove = [node.clone()];
        let audit = w
            .act(&action, || self.cache.remove_nodes(id, to, &remove))
            .await?;
        w.note(format!(
            "{resource}: nodes {from} -> {to} (removing {node}): {}",
            audit.outcome_words()
        ));
        Ok(())
    }

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
        let read = async {
            let ids = self.ids_of(c).await?;
            self.latest_bytes(&c.id, &ids, ctx.now()).await
        };
        let latest = match read.await {
            Ok(latest) => latest,
            Err(e) => {
                w.note(format!(
                    "{resource}: BytesUsedForCacheItems unreadable ({e}): acting on the alarm"
                ));
                return true;
            }
        };
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
        world_with(&[], 2)
    }

    fn world_with(extra: &[(&str, &str)], nodes: i32) -> World {
        let mut vars = vec![("NBAOPS_SCALE__CACHE__CLUSTERS", "nbaops-dev-cache")];
        vars.extend_from_slice(extra);
        let t = test_deps(crate::handler::FUNCTION, &vars).unwrap();
        let cache = leak(FakeElastiCache::with(vec![CacheClusterState {
            id: "nbaops-dev-cache".into(),
            arn: None,
            engine: "memcached".into(),
            node_type: "cache.t3.micro".into(),
            num_nodes: nodes,
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
                scheduler: Box::new(nbaops_shared::fakes::FakeScheduler::default()),
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

    #[test]
    fn scale_in_plan() {
        let mem = 512 << 20;
        let ids: Vec<String> = node_ids(3);
        let m = |v: &[(&str, f64)]| -> BTreeMap<String, f64> {
            v.iter().map(|(n, b)| (n.to_string(), b * MIB)).collect()
        };
        // 3 x 100 MiB in 2 nodes of 512 MiB: 29.3 % <= 50 %: the newest node goes.
        let all = m(&[("0001", 100.0), ("0002", 100.0), ("0003", 100.0)]);
        match plan_scale_in(&ids, &all, 1, mem, 50.0) {
            ScaleIn::Remove { node, projected } => {
                assert_eq!(node, "0003");
                assert!((projected - 300.0 / 1024.0 * 100.0).abs() < 1e-9);
            }
            other => panic!("{other:?}"),
        }
        // 3 x 200 MiB in 2 nodes: 58.6 % > 50 %: keep.
        let full = m(&[("0001", 200.0), ("0002", 200.0), ("0003", 200.0)]);
        assert!(matches!(
            plan_scale_in(&ids, &full, 1, mem, 50.0),
            ScaleIn::Keep(_)
        ));
        // A silent node: no evidence, no removal.
        let silent = m(&[("0001", 10.0), ("0002", 10.0)]);
        assert!(
            matches!(plan_scale_in(&ids, &silent, 1, mem, 50.0), ScaleIn::Keep(w) if w.contains("0003"))
        );
        // At the floor.
        assert!(matches!(
            plan_scale_in(&ids, &all, 3, mem, 50.0),
            ScaleIn::Keep(_)
        ));
    }

    async fn off_peak(w: &World) -> InvocationReport {
        let payload: Value =
            serde_json::json!({"nbaops": {"task": "off-peak-scale-in", "id": "op-1"}});
        let inv = Invocation::at("req", now());
        dispatch(w.f, payload, &Ctx::of::<ScaleOnAlarm>(w.deps, &inv))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn off_peak_removes_the_newest_node_only_when_configured_and_the_data_fits() {
        // Off by default: nothing, not even a read.
        let w = world_with(&[], 3);
        for n in ["0001", "0002", "0003"] {
            used(&w, n, 100.0);
        }
        off_peak(&w).await;
        assert!(w.cache.mutations().is_empty());

        let on = [("NBAOPS_SCALE__CACHE__SCALE_IN", "true")];
        let w = world_with(&on, 3);
        for n in ["0001", "0002", "0003"] {
            used(&w, n, 100.0);
        }
        let r = off_peak(&w).await;
        assert_eq!(
            w.cache.mutations(),
            vec!["remove_nodes nbaops-dev-cache 2 0003"],
            "{:?}",
            r.records[0].notes
        );
        let act = &r.records[0].actions[0];
        assert_eq!(act.action, "cache.remove_node");
        assert_eq!(act.after["remove"][0], "0003");

        // Too full for one node less, or a node without data: nothing removed.
        let w = world_with(&on, 3);
        for n in ["0001", "0002", "0003"] {
            used(&w, n, 200.0);
        }
        let r = off_peak(&w).await;
        assert!(w.cache.mutations().is_empty(), "{:?}", r.records[0].notes);
        let w = world_with(&on, 3);
        used(&w, "0001", 10.0);
        let r = off_peak(&w).await;
        assert!(w.cache.mutations().is_empty());
        assert!(
            r.records[0]
                .notes
                .iter()
                .any(|n| n.contains("without evidence")),
            "{:?}",
            r.records[0].notes
        );
        // Never below scale.cache.min_nodes.
        let w = world_with(&[on[0], ("NBAOPS_SCALE__CACHE__MIN_NODES", "3")], 3);
        for n in ["0001", "0002", "0003"] {
            used(&w, n, 10.0);
        }
        off_peak(&w).await;
        assert!(w.cache.mutations().is_empty());
    }
}
