//! Cost signals: Cost Anomaly Detection alerts (SNS or EventBridge `aws.ce` /
//! `Anomaly Detected`) and AWS Budgets notifications (SNS, plain text or JSON).
//!
//! AWS Budgets has no published JSON shape for SNS; the JSON reader accepts the
//! obvious spellings (`budgetName`, `notificationType`/`alertType`, `threshold`,
//! `actualSpend`/`actualAmount`, `forecastedSpend`/`forecastedAmount`,
//! `budgetLimit`/`budgetedAmount`, amounts as numbers, strings like `"$85.12"` or
//! `{"amount": "85.12", "unit": "USD"}`) and the plain-text labels as keys.

use serde::Serialize;
use serde_json::Value;

use super::util::{
    any, arn_account, arr_field, f64_field, is_placeholder, number_of, obj_field, parse_amount,
    scalar_string, str_field, truncate,
};
use super::{Ctx, Delivery, NotForMe};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RootCause {
    pub service: Option<String>,
    pub account: Option<String>,
    pub account_name: Option<String>,
    pub region: Option<String>,
    pub usage_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostAnomaly {
    pub anomaly_id: String,
    pub monitor_name: Option<String>,
    pub monitor_arn: Option<String>,
    pub account: Option<String>,
    /// As written (`2026-11-24T00:00:00Z` or `2026-11-24`).
    pub start: Option<String>,
    pub end: Option<String>,
    pub total_impact: Option<f64>,
    pub total_expected: Option<f64>,
    pub total_actual: Option<f64>,
    pub impact_percentage: Option<f64>,
    pub max_impact: Option<f64>,
    pub root_causes: Vec<RootCause>,
    pub anomaly_url: Option<String>,
    pub delivery: Delivery,
    pub event_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BudgetKind {
    Actual,
    Forecasted,
    Unknown,
}

impl BudgetKind {
    fn parse(s: &str) -> Self {
        let u = s.trim().to_ascii_uppercase();
        if u.starts_with("FORECAST") {
            Self::Forecasted
        } else if u.starts_with("ACTUAL") {
            Self::Actual
        } else {
            Self::Unknown
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetAlert {
    pub budget_name: String,
    pub kind: BudgetKind,
    /// As written, comparison sign removed: `"80%"`, `"$80.00"`.
    pub threshold: Option<String>,
    pub actual: Option<f64>,
    pub forecast: Option<f64>,
    /// The budgeted amount.
    pub limit: Option<f64>,
    /// ISO code (`USD` for `$`, `EUR` for `€`, `GBP` for `£`, or a code written next to the amount).
    pub currency: Option<String>,
    pub account: Option<String>,
    /// The notification as received (plain text, or the `message` field / raw JSON).
    pub text: String,
    pub delivery: Delivery,
    pub event_id: String,
}

// ---------------------------------------------------------------- anomalies

/// EventBridge `source: aws.ce`, `detail-type: Anomaly Detected`.
pub(crate) fn anomaly_from_eventbridge(ev: &Value, ctx: &Ctx) -> Result<CostAnomaly, NotForMe> {
    let detail = obj_field(ev, &["detail"])
        .ok_or_else(|| NotForMe::new("Anomaly Detected event without detail"))?;
    anomaly_from_json(detail, ctx)
}

/// The anomaly object: the SNS `Message` or the EventBridge `detail`.
pub(crate) fn anomaly_from_json(msg: &Value, ctx: &Ctx) -> Result<CostAnomaly, NotForMe> {
    let anomaly_id = str_field(msg, &["anomalyId", "anomaly_id"])
        .ok_or_else(|| NotForMe::new("cost anomaly without anomalyId"))?;
    let impact = obj_field(msg, &["impact"]);
    // Impact figures live under `impact`; some variants put them at the top level.
    let figure = |keys: &[&str]| {
        impact
            .and_then(|i| f64_field(i, keys))
            .or_else(|| f64_field(msg, keys))
    };
    let monitor_arn = str_field(msg, &["monitorArn", "monitorARN"]).or_else(|| {
        ctx.resources
            .iter()
            .find(|r| r.contains(":anomalymonitor/"))
            .cloned()
    });
    let account = str_field(msg, &["accountId", "account"])
        .or_else(|| ctx.account.clone())
        .or_else(|| monitor_arn.as_deref().and_then(arn_account));
    let root_causes = arr_field(msg, &["rootCauses"])
        .iter()
        .filter_map(root_cause)
        .collect();
    let start = str_field(msg, &["anomalyStartDate", "startDate"]);
    let end = str_field(msg, &["anomalyEndDate", "endDate"]);
    let event_id = ctx.id.clone().unwrap_or_else(|| {
        format!(
            "anomaly/{anomaly_id}/{}",
            end.as_deref().or(start.as_deref()).unwrap_or("-")
        )
    });
    Ok(CostAnomaly {
        monitor_name: str_field(msg, &["monitorName"]),
        monitor_arn,
        account,
        start,
        end,
        total_impact: figure(&["totalImpact", "impact"]),
        total_expected: figure(&["totalExpectedSpend", "totalExpected", "expectedSpend"]),
        total_actual: figure(&["totalActualSpend", "totalActual", "actualSpend"]),
        impact_percentage: figure(&["totalImpactPercentage", "impactPercentage"]),
        max_impact: figure(&["maxImpact"]),
        root_causes,
        anomaly_url: str_field(msg, &["anomalyDetailsLink", "anomalyUrl", "detailsLink"]),
        delivery: ctx.delivery,
        event_id,
        anomaly_id,
    })
}

fn root_cause(v: &Value) -> Option<RootCause> {
    let rc = match v {
        Value::String(s) if !is_placeholder(s) => RootCause {
            service: Some(s.trim().to_string()),
            ..RootCause::default()
        },
        Value::Object(_) => RootCause {
            service: str_field(v, &["service", "serviceName"]),
            account: str_field(
                v,
                &["linkedAccount", "account", "linkedAccountId", "accountId"],
            ),
            account_name: str_field(v, &["linkedAccountName", "accountName"]),
            region: str_field(v, &["region"]),
            usage_type: str_field(v, &["usageType"]),
        },
        _ => return None,
    };
    (rc != RootCause::default()).then_some(rc)
}

// ---------------------------------------------------------------- budgets

pub(crate) fn looks_like_budget_json(msg: &Value) -> bool {
    any(msg, &["budgetName", "budget_name", "Budget Name"]).is_some()
}

pub(crate) fn looks_like_budget_text(text: &str, subject: Option<&str>) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("aws budget notification")
        || lower.contains("budget name:")
        || subject.is_some_and(|s| s.to_ascii_lowercase().starts_with("aws budgets:"))
}

/// Currency code from how an amount is written.
fn currency_of(amount: &str) -> Option<String> {
    let t = amount.trim();
    if t.contains('$') {
        return Some("USD".into());
    }
    if t.contains('€') {
        return Some("EUR".into());
    }
    if t.contains('£') {
        return Some("GBP".into());
    }
    t.split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| w.len() == 3 && w.chars().all(|c| c.is_ascii_uppercase()))
        .map(str::to_string)
}

/// `"> $80.00"` → `"$80.00"`.
fn clean_threshold(s: &str) -> Option<String> {
    let t = s
        .trim()
        .trim_start_matches(['>', '<', '=', '≥', '≤', ' '])
        .trim();
    (!is_placeholder(t)).then(|| t.to_string())
}

/// Value after `label:` on a line of its own (label matched case-insensitively).
fn line_value<'a>(text: &'a str, label: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let head = line.get(..label.len())?;
        if !head.eq_ignore_ascii_case(label) {
            return None;
        }
        let rest = line.get(label.len()..)?.trim_start();
        let value = rest.strip_prefix(':')?.trim();
        (!value.is_empty()).then_some(value)
    })
}

/// The text between `start` and the next `end` (ASCII case-insensitive search).
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let from = lower.find(&start.to_ascii_lowercase())? + start.len();
    let to = from + lower.get(from..)?.find(&end.to_ascii_lowercase())?;
    text.get(from..to).map(str::trim).filter(|s| !s.is_empty())
}

/// The first whitespace-separated token after `prefix`, trailing punctuation removed.
fn token_after<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let lower = text.to_ascii_lowercase();
    let from = lower.find(&prefix.to_ascii_lowercase())? + prefix.len();
    let rest = text.get(from..)?.trim_start();
    let token = rest.split_whitespace().next()?;
    Some(token.trim_end_matches(['.', ',', ';']))
}

/// The plain-text AWS Budgets notification.
pub(crate) fn budget_from_text(text: &str, ctx: &Ctx) -> Result<BudgetAlert, NotForMe> {
    let budget_name = line_value(text, "Budget Name")
        .map(str::to_string)
        .or_else(|| between(text, "associated with your ", " budget").map(str::to_string))
        .or_else(|| {
            ctx.subject
                .as_deref()
                .and_then(|s| between(s, "AWS Budgets: ", " has "))
                .map(str::to_string)
        })
        .ok_or_else(|| {
            NotForMe::new(format!(
                "budget notification without a budget name: {:?}",
                truncate(text.trim(), 80)
            ))
        })?;
    let kind = match line_value(text, "Alert Type") {
        Some(t) => BudgetKind::parse(t),
        None if text.contains("FORECASTED") => BudgetKind::Forecasted,
        None if text.contains("ACTUAL") => BudgetKind::Actual,
        None => BudgetKind::Unknown,
    };
    let threshold_raw = line_value(text, "Alert Threshold")
        .or_else(|| between(text, "budget is greater than ", " for "))
        .or_else(|| between(text, "budget is greater than ", ". "));
    let actual_raw = line_value(text, "ACTUAL Amount")
        .or_else(|| token_after(text, "The ACTUAL Cost associated with this budget is"));
    let forecast_raw = line_value(text, "FORECASTED Amount")
        .or_else(|| token_after(text, "The FORECASTED Cost associated with this budget is"));
    let limit_raw = line_value(text, "Budgeted Amount");
    let currency = [limit_raw, actual_raw, forecast_raw, threshold_raw]
        .into_iter()
        .flatten()
        .find_map(currency_of);
    let account = line_value(text, "AWS Account")
        .or_else(|| {
            text.lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("AWS Account "))
        })
        .map(|a| a.chars().filter(char::is_ascii_digit).collect::<String>())
        .filter(|a| a.len() == 12);
    let threshold = threshold_raw.and_then(clean_threshold);
    let event_id = budget_event_id(ctx, &budget_name, kind, threshold.as_deref());
    Ok(BudgetAlert {
        budget_name,
        kind,
        threshold,
        actual: actual_raw.and_then(parse_amount),
        forecast: forecast_raw.and_then(parse_amount),
        limit: limit_raw.and_then(parse_amount),
        currency,
        account,
        text: text.to_string(),
        delivery: ctx.delivery,
        event_id,
    })
}

fn budget_event_id(ctx: &Ctx, name: &str, kind: BudgetKind, threshold: Option<&str>) -> String {
    ctx.id.clone().unwrap_or_else(|| {
        let when = ctx
            .time
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| "-".into());
        format!("budget/{name}/{kind:?}/{}/{when}", threshold.unwrap_or("-"))
    })
}

/// A JSON budget notification (see the module docs for accepted keys).
pub(crate) fn budget_from_json(msg: &Value, ctx: &Ctx) -> Result<BudgetAlert, NotForMe> {
    let budget_name = str_field(msg, &["budgetName", "budget_name", "Budget Name"])
        .ok_or_else(|| NotForMe::new("budget notification JSON without budgetName"))?;
    let kind = str_field(
        msg,
        &[
            "notificationType",
            "alertType",
            "Alert Type",
            "thresholdKind",
            "type",
        ],
    )
    .map(|k| BudgetKind::parse(&k))
    .unwrap_or(BudgetKind::Unknown);
    let threshold = match any(msg, &["threshold", "alertThreshold", "Alert Threshold"]) {
        Some(Value::Number(n)) => {
            let pct = str_field(msg, &["thresholdType"])
                .is_some_and(|t| t.to_ascii_uppercase().starts_with("PERCENT"));
            Some(if pct { format!("{n}%") } else { n.to_string() })
        }
        Some(v) => scalar_string(v).and_then(|s| clean_threshold(&s)),
        None => None,
    };
    let amount = |keys: &[&str]| any(msg, keys);
    let actual_v = amount(&["actualSpend", "actualAmount", "actual", "ACTUAL Amount"]);
    let forecast_v = amount(&[
        "forecastedSpend",
        "forecastedAmount",
        "forecast",
        "FORECASTED Amount",
    ]);
    let limit_v = amount(&["budgetLimit", "budgetedAmount", "limit", "Budgeted Amount"]);
    let currency = str_field(msg, &["currency", "currencyCode", "unit"])
        .or_else(|| {
            [limit_v, actual_v, forecast_v]
                .into_iter()
                .flatten()
                .find_map(|v| match v {
                    Value::Object(_) => str_field(v, &["unit", "currency"]),
                    Value::String(s) => currency_of(s),
                    _ => None,
                })
        })
        .or_else(|| threshold.as_deref().and_then(currency_of));
    let account = str_field(msg, &["accountId", "account", "AWS Account"]);
    let text = str_field(msg, &["message", "text"]).unwrap_or_else(|| msg.to_string());
    let event_id = budget_event_id(ctx, &budget_name, kind, threshold.as_deref());
    Ok(BudgetAlert {
        budget_name,
        kind,
        threshold,
        actual: actual_v.and_then(number_of),
        forecast: forecast_v.and_then(number_of),
        limit: limit_v.and_then(number_of),
        currency,
        account,
        text,
        delivery: ctx.delivery,
        event_id,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::super::tests::{one, reason};
    use super::super::util::get;
    use super::super::{classify, Inbound};
    use super::*;
    use serde_json::json;

    fn anomaly(fixture: &str) -> CostAnomaly {
        match one(fixture) {
            Inbound::CostAnomaly(a) => a,
            other => panic!("expected cost anomaly, got {other:#?}"),
        }
    }

    fn budget(fixture: &str) -> BudgetAlert {
        match one(fixture) {
            Inbound::Budget(b) => b,
            other => panic!("expected budget, got {other:#?}"),
        }
    }

    #[test]
    fn sns_anomaly_multiple_root_causes() {
        let a = anomaly(include_str!(
            "../../../events/cost/sns-anomaly-multiple-root-causes.json"
        ));
        assert_eq!(a.anomaly_id, "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d");
        assert_eq!(a.monitor_name.as_deref(), Some("nbaops-dev-services"));
        assert_eq!(
            a.monitor_arn.as_deref(),
            Some("arn:aws:ce::123456789012:anomalymonitor/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
        );
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        assert_eq!(a.start.as_deref(), Some("2026-11-24T00:00:00Z"));
        assert_eq!(a.end.as_deref(), Some("2026-11-25T00:00:00Z"));
        assert_eq!(a.total_impact, Some(182.4));
        assert_eq!(a.total_expected, Some(41.2));
        assert_eq!(a.total_actual, Some(223.6));
        assert_eq!(a.impact_percentage, Some(442.72));
        assert_eq!(a.max_impact, Some(97.3));
        assert_eq!(a.root_causes.len(), 2);
        assert_eq!(
            a.root_causes[0],
            RootCause {
                service: Some("Amazon Elastic Compute Cloud - Compute".into()),
                account: Some("123456789012".into()),
                account_name: Some("nbaops-dev".into()),
                region: Some("us-east-1".into()),
                usage_type: Some("USE1-BoxUsage:m6i.2xlarge".into()),
            }
        );
        assert_eq!(
            a.root_causes[1].service.as_deref(),
            Some("Amazon Relational Database Service")
        );
        assert!(a
            .anomaly_url
            .as_deref()
            .unwrap()
            .contains("anomaly-detection"));
        assert_eq!(a.delivery, Delivery::Sns);
        assert_eq!(a.event_id, "e7f8a9b0-c1d2-5e3f-a4b5-c6d7e8f9a001");
    }

    #[test]
    fn sns_anomaly_service_only() {
        let a = anomaly(include_str!(
            "../../../events/cost/sns-anomaly-service-only.json"
        ));
        assert_eq!(
            a.root_causes,
            vec![RootCause {
                service: Some("AWS Lambda".into()),
                ..RootCause::default()
            }]
        );
        assert_eq!(a.monitor_name, None);
        assert_eq!(a.total_impact, Some(12.5));
        assert_eq!(a.impact_percentage, None);
    }

    #[test]
    fn eventbridge_anomaly() {
        let a = anomaly(include_str!(
            "../../../events/cost/eventbridge-anomaly.json"
        ));
        assert_eq!(a.delivery, Delivery::EventBridge);
        assert_eq!(a.event_id, "6e5d4c3b-2a19-4807-b6a5-948372615001");
        assert_eq!(a.anomaly_id, "b2c3d4e5-f6a7-4b8c-9d0e-1f2a3b4c5d6e");
        assert_eq!(a.account.as_deref(), Some("123456789012"));
        // monitorArn absent from detail: taken from resources[].
        assert!(a
            .monitor_arn
            .as_deref()
            .unwrap()
            .contains(":anomalymonitor/"));
        assert_eq!(a.total_impact, Some(64.0));
        assert_eq!(a.total_actual, Some(88.25));
        assert_eq!(a.total_expected, Some(24.25));
        assert_eq!(a.root_causes.len(), 1);
        assert_eq!(a.root_causes[0].account.as_deref(), Some("123456789012"));
        assert_eq!(
            a.root_causes[0].usage_type.as_deref(),
            Some("USE1-NatGateway-Bytes")
        );
        assert_eq!(a.root_causes[0].account_name, None);
    }

    #[test]
    fn budget_plain_text_actual() {
        let b = budget(include_str!(
            "../../../events/cost/budget-plain-text-actual.json"
        ));
        assert_eq!(b.budget_name, "nbaops-dev-monthly");
        assert_eq!(b.kind, BudgetKind::Actual);
        assert_eq!(b.threshold.as_deref(), Some("$80.00"));
        assert_eq!(b.actual, Some(85.12));
        assert_eq!(b.forecast, None);
        assert_eq!(b.limit, Some(100.0));
        assert_eq!(b.currency.as_deref(), Some("USD"));
        assert_eq!(b.account.as_deref(), Some("123456789012"));
        assert!(b
            .text
            .starts_with("AWS Budget Notification November 25, 2026"));
        assert_eq!(b.delivery, Delivery::Sns);
        assert_eq!(b.event_id, "f1e2d3c4-b5a6-5978-8a9b-0c1d2e3f4a01");
    }

    #[test]
    fn budget_json_forecast() {
        let b = budget(include_str!(
            "../../../events/cost/budget-json-forecast.json"
        ));
        assert_eq!(b.budget_name, "nbaops-dev-monthly");
        assert_eq!(b.kind, BudgetKind::Forecasted);
        assert_eq!(b.threshold.as_deref(), Some("100%"));
        assert_eq!(b.actual, Some(61.4));
        assert_eq!(b.forecast, Some(112.75));
        assert_eq!(b.limit, Some(100.0));
        assert_eq!(b.currency.as_deref(), Some("USD"));
        assert_eq!(b.account.as_deref(), Some("123456789012"));
        assert!(b.text.contains("FORECASTED"));
    }

    #[test]
    fn budget_text_sentence_fallbacks() {
        let text = "AWS Budget Notification November 25, 2026\nAWS Account 123456789012\n\nDear AWS Customer,\n\nYou requested that we alert you when the FORECASTED Cost associated with your nbaops-dev-quarterly budget is greater than €250.00 for the current quarter. The FORECASTED Cost associated with this budget is €301.99. You can find additional details below.";
        let ctx = Ctx::empty(Delivery::Sns);
        let b = budget_from_text(text, &ctx).unwrap();
        assert_eq!(b.budget_name, "nbaops-dev-quarterly");
        assert_eq!(b.kind, BudgetKind::Forecasted);
        assert_eq!(b.threshold.as_deref(), Some("€250.00"));
        assert_eq!(b.forecast, Some(301.99));
        assert_eq!(b.actual, None);
        assert_eq!(b.currency.as_deref(), Some("EUR"));
        assert_eq!(b.account.as_deref(), Some("123456789012"));
        assert!(b
            .event_id
            .starts_with("budget/nbaops-dev-quarterly/Forecasted/"));
    }

    #[test]
    fn budget_text_without_name_is_not_for_me() {
        let ctx = Ctx::empty(Delivery::Sns);
        let e = budget_from_text("AWS Budget Notification\nnothing else", &ctx).unwrap_err();
        assert!(e.reason.contains("without a budget name"));
    }

    #[test]
    fn anomaly_without_id_is_not_for_me() {
        let v = json!({"id":"x","detail-type":"Anomaly Detected","source":"aws.ce","detail":{"anomalyId":"None"}});
        assert!(reason(&classify(&v)[0]).contains("without anomalyId"));
    }

    #[test]
    fn helpers() {
        assert_eq!(clean_threshold("> $80.00").as_deref(), Some("$80.00"));
        assert_eq!(clean_threshold(">= 80%").as_deref(), Some("80%"));
        assert_eq!(clean_threshold(" > "), None);
        assert_eq!(currency_of("85.12 CHF").as_deref(), Some("CHF"));
        assert_eq!(currency_of("85.12"), None);
        assert_eq!(
            line_value("a\n  Budget Name : x y \n", "budget name"),
            Some("x y")
        );
        assert_eq!(line_value("Budget Named: x", "Budget Name"), None);
        assert_eq!(token_after("is $85.12. You", "is"), Some("$85.12"));
        assert_eq!(
            between("AWS Budgets: foo has exceeded", "AWS Budgets: ", " has "),
            Some("foo")
        );
        assert!(get(&json!({"a": 1}), "A").is_some());
    }
}
