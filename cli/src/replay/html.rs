//! `--html`: one self-contained page (inline CSS and SVG, nothing fetched): a step chart per
//! Auto Scaling group of its desired capacity, one of each DB instance's class, and the timeline.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::engine::ReplayResult;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: f64 = 900.0;
const H: f64 = 120.0;
const PAD: f64 = 40.0;

fn x_of(t: DateTime<Utc>, r: &ReplayResult) -> f64 {
    let span = (r.to - r.from).num_seconds().max(1) as f64;
    PAD + (t - r.from).num_seconds() as f64 / span * (W - 2.0 * PAD)
}

/// A step chart of one resource: numbers on a linear scale, classes on their own ordered levels.
fn chart(name: &str, points: &[(DateTime<Utc>, Value)], r: &ReplayResult) -> String {
    let mut levels: Vec<String> = Vec::new();
    let numeric = points.iter().all(|(_, v)| v.is_number());
    let level = |v: &Value, levels: &mut Vec<String>| -> f64 {
        if let Some(n) = v.as_f64() {
            return n;
        }
        let s = v.as_str().unwrap_or_default().to_string();
        match levels.iter().position(|l| *l == s) {
            Some(i) => i as f64,
            None => {
                levels.push(s);
                (levels.len() - 1) as f64
            }
        }
    };
    let ys: Vec<f64> = points.iter().map(|(_, v)| level(v, &mut levels)).collect();
    let (lo, hi) = if numeric {
        (0.0, ys.iter().cloned().fold(1.0, f64::max))
    } else {
        (0.0, (levels.len().max(2) - 1) as f64)
    };
    let y_of = |y: f64| H - 20.0 - (y - lo) / (hi - lo).max(1.0) * (H - 40.0);
    let mut path = String::new();
    for (i, ((t, _), y)) in points.iter().zip(&ys).enumerate() {
        let x = x_of(*t, r);
        if i == 0 {
            let _ = write!(path, "M{x:.1},{:.1}", y_of(*y));
        } else {
            let _ = write!(path, " H{x:.1} V{:.1}", y_of(*y));
        }
    }
    let _ = write!(path, " H{:.1}", W - PAD);
    let mut svg = format!(
        r#"<h3>{}</h3><svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img"><rect x="{PAD}" y="10" width="{}" height="{}" class="frame"/>"#,
        escape(name),
        W - 2.0 * PAD,
        H - 30.0
    );
    for h in 0..=24 {
        let t = r.from + (r.to - r.from) * h / 24;
        if h % 3 == 0 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{}" class="axis">{}</text>"#,
                x_of(t, r),
                H - 4.0,
                t.format("%H:%M")
            );
        }
    }
    if numeric {
        for v in [lo, hi] {
            let _ = write!(
                svg,
                r#"<text x="4" y="{:.1}" class="axis">{v}</text>"#,
                y_of(v) + 4.0
            );
        }
    } else {
        for (i, l) in levels.iter().enumerate() {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" class="axis">{}</text>"#,
                PAD + 4.0,
                y_of(i as f64) - 3.0,
                escape(l)
            );
        }
    }
    let _ = write!(svg, r#"<path d="{path}" class="line"/></svg>"#);
    svg
}

pub fn render(r: &ReplayResult, totals_text: &str) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>nbaops replay</h1><p>{} to {} ({} platform)</p>",
        r.from.to_rfc3339(),
        r.to.to_rfc3339(),
        escape(&r.env)
    );
    body.push_str("<h2>Capacity over the window</h2>");
    for (name, points) in &r.series {
        if name.starts_with("group ") || name.starts_with("db ") {
            body.push_str(&chart(name, points, r));
        }
    }
    let _ = write!(body, "<h2>Totals</h2><pre>{}</pre>", escape(totals_text));
    body.push_str("<h2>Timeline</h2><table><tr><th>time</th><th>function</th><th>decision</th><th>from</th></tr>");
    for d in &r.timeline {
        let class = d.outcome.clone().unwrap_or_else(|| d.kind.clone());
        let _ = write!(
            body,
            r#"<tr class="{}"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            escape(&class),
            d.at.format("%H:%M:%S"),
            escape(&d.function),
            escape(&d.line),
            escape(&d.origin)
        );
    }
    body.push_str("</table>");
    format!(
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>nbaops replay</title><style>
body{{font-family:sans-serif;margin:1em 2em;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}}
tr.acted td{{background:#e6f4e6}}tr.skipped td{{background:#f4f0e0}}tr.alert td{{background:#fbe9e9}}tr.error td,tr.failed td{{background:#f6c6c6}}
.frame{{fill:#fafafa;stroke:#ccc}}.line{{fill:none;stroke:#1f5fbf;stroke-width:2}}.axis{{font-size:10px;fill:#666}}
</style></head><body>{body}</body></html>
"#
    )
}
