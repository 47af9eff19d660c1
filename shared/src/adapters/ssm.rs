use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ssm::operation::get_parameter::GetParameterError;

use super::{dependency, SdkParams};
use crate::error::{NbaopsError, Result};
use crate::ports::Params;
use crate::telemetry::register_secret;

#[async_trait]
impl Params for SdkParams {
    async fn get_by_path(&self, prefix: &str) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let page = self
                .0
                .get_parameters_by_path()
                .path(prefix.trim_end_matches('/'))
                .recursive(true)
                // Configuration is plain String: the role reading it needs no kms:Decrypt.
                .with_decryption(false)
                .set_next_token(token.clone())
                .send()
                .await
                .map_err(|e| dependency("ssm", e))?;
            for p in page.parameters() {
                if let (Some(name), Some(value)) = (p.name(), p.value()) {
                    if p.r#type().map(|t| t.as_str()) == Some("SecureString") {
                        return Err(NbaopsError::config(format!(
                            "SSM {name} is a SecureString under a configuration path: configuration is String; secrets live under /nbaops/<env>/secrets/"
                        )));
                    }
                    out.insert(name.to_string(), value.to_string());
                }
            }
            token = page.next_token().map(String::from);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<String>> {
        match self
            .0
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(out) => {
                let p = out.parameter();
                let value = p.and_then(|p| p.value()).map(String::from);
                if let (Some(p), Some(v)) = (p, &value) {
                    if p.r#type().map(|t| t.as_str()) == Some("SecureString") {
                        register_secret(v);
                    }
                }
                Ok(value)
            }
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(GetParameterError::ParameterNotFound(_))
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(dependency("ssm", e)),
        }
    }
}
