//! What a class or node type holds, for the alarms that must follow a resize (issue #17): memory
//! per RDS instance class and per Memcached node type, and the SPEC percentages the alarms sit at.
//! Part of the `scale` section (keys `scale.rds.class_memory`, `scale.rds.reserved_memory`,
//! `scale.rds.memory_alarm_used_percent`, `scale.rds.connections_alarm_percent`,
//! `scale.cache.node_memory`, `scale.cache.memory_high_percent`; see [`super::scale::KEYS`]).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Settings;
use crate::error::{NbaopsError, Result};

/// Per-class and per-node-type memory, in bytes, and the alarm percentages.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Capacity {
    /// RDS instance class -> its memory (the instance class table's GiB).
    pub rds_class_memory: BTreeMap<String, u64>,
    /// What RDS keeps for the OS and its own processes: DBInstanceClassMemory = class memory - this.
    pub rds_reserved_memory: u64,
    /// The memory alarm fires above this percent used (FreeableMemory below the rest).
    pub rds_memory_used_percent: f64,
    /// The connections alarm fires above this percent of the default max_connections.
    pub rds_connections_percent: f64,
    /// Memcached node type -> its max_cache_memory in bytes.
    pub cache_node_memory: BTreeMap<String, u64>,
    /// A node above this percent of its cache memory is full enough to add a node.
    pub cache_memory_high_percent: f64,
    /// The off-peak task may remove a Memcached node (default off).
    pub cache_scale_in: bool,
    /// Never fewer nodes than this.
    pub cache_min_nodes: i32,
    /// Remove a node only if the data fits in one node less at or below this percent.
    pub cache_scale_in_below_percent: f64,
}

/// "512", "512B", "1402MiB", "1GiB", "2.5GiB" -> bytes (binary units; memcached's and the RDS
/// class tables' "MB"/"GiB" are both powers of 1024).
pub fn parse_bytes(raw: &str) -> Option<u64> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (num, unit) = raw.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = n * mult;
    (bytes.is_finite() && bytes >= 1.0 && bytes.fract() == 0.0).then_some(bytes as u64)
}

/// "name=size,name=size" -> name -> bytes; names must start with `prefix`.
fn table(s: &Settings, key: &str, prefix: &str) -> Result<BTreeMap<String, u64>> {
    let expected =
        format!("a comma list of {prefix}<size>=<bytes|MiB|GiB>, e.g. {prefix}micro=1GiB");
    let mut out = BTreeMap::new();
    for entry in s.list(key) {
        let (name, size) = entry.split_once('=').ok_or_else(|| s.bad(key, &expected))?;
        let (name, size) = (name.trim(), size.trim());
        if !name.starts_with(prefix) || name.len() <= prefix.len() {
            return Err(s.bad(key, &expected));
        }
        let bytes = parse_bytes(size).ok_or_else(|| s.bad(key, &expected))?;
        if out.insert(name.to_string(), bytes).is_some() {
            return Err(NbaopsError::config(format!(
                "{key} (from {}): {name} is listed twice",
                s.origin(key)
            )));
        }
    }
    Ok(out)
}

fn percent(s: &Settings, key: &str) -> Result<f64> {
    let p: f64 = s.number(key, "a percent in (0, 100)")?;
    if !(p > 0.0 && p < 100.0) {
        return Err(s.bad(key, "a percent in (0, 100)"));
    }
    Ok(p)
}

/// Parses and checks the tables: every class of the ladder has its memory, and each class holds
/// more than RDS reserves.
pub fn from_settings(
    s: &Settings,
    rds_ladder: &[String],
    cache_max_nodes: i32,
) -> Result<Capacity> {
    let rds_class_memory = table(s, "scale.rds.class_memory", "db.")?;
    let missing: Vec<&str> = rds_ladder
        .iter()
        .filter(|c| !rds_class_memory.contains_key(*c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(NbaopsError::config(format!(
            "scale.rds.class_memory (from {}) has no memory for {} of scale.rds.ladder: add <class>=<GiB> for each",
            s.origin("scale.rds.class_memory"),
            missing.join(", ")
        )));
    }
    let reserved_key = "scale.rds.reserved_memory";
    let rds_reserved_memory = parse_bytes(&s.string(reserved_key))
        .ok_or_else(|| s.bad(reserved_key, "bytes, MiB or GiB (e.g. 233MiB)"))?;
    if let Some((class, _)) = rds_class_memory
        .iter()
        .find(|(_, m)| **m <= rds_reserved_memory)
    {
        return Err(NbaopsError::config(format!(
            "{reserved_key} (from {}) is not below the memory of {class} in scale.rds.class_memory",
            s.origin(reserved_key)
        )));
    }
    let cache_memory_high_percent = percent(s, "scale.cache.memory_high_percent")?;
    let cache_scale_in_below_percent = percent(s, "scale.cache.scale_in_below_percent")?;
    if cache_scale_in_below_percent >= cache_memory_high_percent {
        return Err(s.bad(
            "scale.cache.scale_in_below_percent",
            "a percent below scale.cache.memory_high_percent (or a removal would trigger the next addition)",
        ));
    }
    let cache_min_nodes: i32 = super::positive(s, "scale.cache.min_nodes", "a whole number >= 1")?;
    if cache_min_nodes > cache_max_nodes {
        return Err(s.bad(
            "scale.cache.min_nodes",
            "a node count not above scale.cache.max_nodes",
        ));
    }
    Ok(Capacity {
        rds_class_memory,
        rds_reserved_memory,
        rds_memory_used_percent: percent(s, "scale.rds.memory_alarm_used_percent")?,
        rds_connections_percent: percent(s, "scale.rds.connections_alarm_percent")?,
        cache_node_memory: table(s, "scale.cache.node_memory", "cache.")?,
        cache_memory_high_percent,
        cache_scale_in: s.boolean("scale.cache.scale_in")?,
        cache_min_nodes,
        cache_scale_in_below_percent,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1GiB"), Some(1 << 30));
        assert_eq!(parse_bytes("512MiB"), Some(512 << 20));
        assert_eq!(parse_bytes("1402MiB"), Some(1402 << 20));
        assert_eq!(parse_bytes(" 2.5GiB "), Some(5 << 29));
        assert_eq!(parse_bytes("214748364"), Some(214_748_364));
        for bad in ["", "GiB", "1GB", "-1GiB", "0", "1.5", "x1GiB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
