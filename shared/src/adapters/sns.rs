use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_sns::types::MessageAttributeValue;

use super::{dependency, SdkNotifier};
use crate::error::{NbaopsError, Result};
use crate::ports::Notifier;

#[async_trait]
impl Notifier for SdkNotifier {
    async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
        attributes: &BTreeMap<String, String>,
    ) -> Result<String> {
        let mut req = self.0.publish().topic_arn(topic_arn).message(message);
        if !subject.is_empty() {
            req = req.subject(subject);
        }
        for (k, v) in attributes {
            if v.is_empty() {
                continue;
            }
            let attr = MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .map_err(|e| NbaopsError::dependency("sns", e.to_string()))?;
            req = req.message_attributes(k, attr);
        }
        let out = req.send().await.map_err(|e| dependency("sns", e))?;
        Ok(out.message_id().unwrap_or("").to_string())
    }
}
