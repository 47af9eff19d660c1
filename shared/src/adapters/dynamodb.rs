use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, Delete, GlobalSecondaryIndex,
    KeySchemaElement, KeyType, Projection, ProjectionType, Put, ScalarAttributeType,
    TimeToLiveSpecification, TransactWriteItem,
};
use serde_json::Value;

use super::dependency;
use crate::error::{NbaopsError, Result};
use crate::ports::{DayItem, Expect, Ledger, LedgerWrite};

/// The ledger's global secondary index by day: key `day` (S, YYYY-MM-DD UTC) + `sk`, projecting
/// `data`. Sparse: only the items written with a `day` (the audit records) are in it. As in
/// infra/template.yaml (checked by infra/tests/check_template.py).
pub const BY_DAY_INDEX: &str = "by-day";

/// The ledger table: `pk` (S) + `sk` (S) keys, `data` (S, JSON), `expires_at` (N, TTL attribute),
/// `day` (S) on the items of the [`BY_DAY_INDEX`].
pub struct DynamoLedger {
    pub client: aws_sdk_dynamodb::Client,
    pub table: String,
}

fn data_of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Value> {
    let s = item.get("data")?.as_s().ok()?;
    serde_json::from_str(s).ok()
}

#[async_trait]
impl Ledger for DynamoLedger {
    async fn put_if_absent(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: i64,
    ) -> Result<bool> {
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk.into()))
            .item("sk", AttributeValue::S(sk.into()))
            .item("data", AttributeValue::S(data.to_string()))
            .item("expires_at", AttributeValue::N(expires_at.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match res {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(dependency("dynamodb", e)),
        }
    }

    async fn put(&self, pk: &str, sk: &str, data: &Value, expires_at: Option<i64>) -> Result<()> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk.into()))
            .item("sk", AttributeValue::S(sk.into()))
            .item("data", AttributeValue::S(data.to_string()));
        if let Some(t) = expires_at {
            req = req.item("expires_at", AttributeValue::N(t.to_string()));
        }
        req.send().await.map_err(|e| dependency("dynamodb", e))?;
        Ok(())
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Value>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dependency("dynamodb", e))?;
        Ok(out.item().and_then(data_of))
    }

    async fn delete(&self, pk: &str, sk: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.into()))
            .key("sk", AttributeValue::S(sk.into()))
            .send()
            .await
            .map_err(|e| dependency("dynamodb", e))?;
        Ok(())
    }

    async fn query(&self, pk: &str, sk_prefix: &str) -> Result<Vec<(String, Value)>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let mut req = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .expression_attribute_values(":pk", AttributeValue::S(pk.into()))
                .set_exclusive_start_key(start.take());
            req = if sk_prefix.is_empty() {
                req.key_condition_expression("pk = :pk")
            } else {
                req.key_condition_expression("pk = :pk AND begins_with(sk, :p)")
                    .expression_attribute_values(":p", AttributeValue::S(sk_prefix.into()))
            };
            let page = req.send().await.map_err(|e| dependency("dynamodb", e))?;
            for item in page.items() {
                if let (Some(Ok(sk)), Some(data)) =
                    (item.get("sk").map(|v| v.as_s()), data_of(item))
                {
                    out.push((sk.clone(), data));
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    async fn put_on_day(
        &self,
        pk: &str,
        sk: &str,
        data: &Value,
        expires_at: Option<i64>,
        day: &str,
    ) -> Result<()> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(pk.into()))
            .item("sk", AttributeValue::S(sk.into()))
            .item("data", AttributeValue::S(data.to_string()))
            .item("day", AttributeValue::S(day.into()));
        if let Some(t) = expires_at {
            req = req.item("expires_at", AttributeValue::N(t.to_string()));
        }
        req.send().await.map_err(|e| dependency("dynamodb", e))?;
        Ok(())
    }

    /// One `Query` of the index (paginated), newest first (`ScanIndexForward=false`). A global
    /// secondary index is read eventually consistent only: no `ConsistentRead`
    /// (https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/GSI.html).
    async fn query_day(&self, day: &str) -> Result<Vec<DayItem>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(BY_DAY_INDEX)
                .key_condition_expression("#day = :day")
                .expression_attribute_names("#day", "day")
                .expression_attribute_values(":day", AttributeValue::S(day.into()))
                .scan_index_forward(false)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| dependency("dynamodb", e))?;
            for item in page.items() {
                let key = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
                if let (Some(pk), Some(sk), Some(data)) = (key("pk"), key("sk"), data_of(item)) {
                    out.push(DayItem { pk, sk, data });
                }
            }
            match page.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(out),
            }
        }
    }

    /// One `TransactWriteItems`. A failed expectation cancels the transaction with a
    /// `ConditionalCheckFailed` reason at that item's position
    /// (https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_TransactWriteItems.html).
    async fn write_all(&self, writes: &[LedgerWrite]) -> Result<Option<usize>> {
        if writes.is_empty() {
            return Ok(None);
        }
        let items = writes
            .iter()
            .map(|w| transact_item(&self.table, w))
            .collect::<Result<Vec<_>>>()?;
        let res = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) => {
                if let Some(TransactWriteItemsError::TransactionCanceledException(c)) =
                    e.as_service_error()
                {
                    let failed = c
                        .cancellation_reasons()
                        .iter()
                        .position(|r| r.code() == Some("ConditionalCheckFailed"));
                    if let Some(i) = failed {
                        return Ok(Some(i));
                    }
                }
                Err(dependency("dynamodb", e))
            }
        }
    }
}

/// The condition expression of a write's expectations, with its placeholder values.
fn condition(w: &LedgerWrite) -> (Option<String>, Vec<(String, AttributeValue)>) {
    let mut values = Vec::new();
    let parts: Vec<String> = w
        .expect
        .iter()
        .enumerate()
        .map(|(i, e)| match e {
            Expect::Absent => "attribute_not_exists(pk)".to_string(),
            Expect::ExpiredBy(t) => {
                values.push((format!(":t{i}"), AttributeValue::N(t.to_string())));
                format!("expires_at <= :t{i}")
            }
            Expect::Holds(v) => {
                values.push((format!(":d{i}"), AttributeValue::S(v.to_string())));
                format!("#data = :d{i}")
            }
        })
        .collect();
    if parts.is_empty() {
        (None, values)
    } else {
        (Some(parts.join(" OR ")), values)
    }
}

fn transact_item(table: &str, w: &LedgerWrite) -> Result<TransactWriteItem> {
    let build =
        |e: aws_sdk_dynamodb::error::BuildError| NbaopsError::dependency("dynamodb", e.to_string());
    let (cond, values) = condition(w);
    let uses_data = w.expect.iter().any(|e| matches!(e, Expect::Holds(_)));
    let names = uses_data.then(|| {
        [("#data".to_string(), "data".to_string())]
            .into_iter()
            .collect()
    });
    let values = (!values.is_empty()).then(|| values.into_iter().collect());
    let item = match &w.data {
        Some(data) => {
            let mut put = Put::builder()
                .table_name(table)
                .item("pk", AttributeValue::S(w.pk.clone()))
                .item("sk", AttributeValue::S(w.sk.clone()))
                .item("data", AttributeValue::S(data.to_string()))
                .set_condition_expression(cond)
                .set_expression_attribute_names(names)
                .set_expression_attribute_values(values);
            if let Some(t) = w.expires_at {
                put = put.item("expires_at", AttributeValue::N(t.to_string()));
            }
            if let Some(day) = &w.day {
                put = put.item("day", AttributeValue::S(day.clone()));
            }
            TransactWriteItem::builder()
                .put(put.build().map_err(build)?)
                .build()
        }
        None => TransactWriteItem::builder()
            .delete(
                Delete::builder()
                    .table_name(table)
                    .key("pk", AttributeValue::S(w.pk.clone()))
                    .key("sk", AttributeValue::S(w.sk.clone()))
                    .set_condition_expression(cond)
                    .set_expression_attribute_names(names)
                    .set_expression_attribute_values(values)
                    .build()
                    .map_err(build)?,
            )
            .build(),
    };
    Ok(item)
}

/// Creates the ledger table as the SAM template declares it (for the local stack and tests).
pub async fn create_ledger_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<()> {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(|e| NbaopsError::dependency("dynamodb", e.to_string()))
    };
    let key = |n: &str, t: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .map_err(|e| NbaopsError::dependency("dynamodb", e.to_string()))
    };
    let by_day = GlobalSecondaryIndex::builder()
        .index_name(BY_DAY_INDEX)
        .key_schema(key("day", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .projection(
            Projection::builder()
                .projection_type(ProjectionType::Include)
                .non_key_attributes("data")
                .build(),
        )
        .build()
        .map_err(|e| NbaopsError::dependency("dynamodb", e.to_string()))?;
    client
        .create_table()
        .table_name(table)
        .attribute_definitions(attr("pk")?)
        .attribute_definitions(attr("sk")?)
        .attribute_definitions(attr("day")?)
        .key_schema(key("pk", KeyType::Hash)?)
        .key_schema(key("sk", KeyType::Range)?)
        .global_secondary_indexes(by_day)
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await
        .map_err(|e| dependency("dynamodb", e))?;
    let ttl = TimeToLiveSpecification::builder()
        .attribute_name("expires_at")
        .enabled(true)
        .build()
        .map_err(|e| NbaopsError::dependency("dynamodb", e.to_string()))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(ttl)
        .send()
        .await
        .map_err(|e| dependency("dynamodb", e))?;
    Ok(())
}
