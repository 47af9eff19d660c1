//! `HttpPost` on hyper (already in the tree under the AWS SDK): HTTP/1.1, rustls with the web
//! PKI roots, one pooled client built at init.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::error::{NbaopsError, Result};
use crate::ports::{HttpPost, HttpReply};

const MAX_REPLY_BODY: usize = 2048;

pub struct HyperHttpPost {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HyperHttpPost {
    pub fn new() -> Result<HyperHttpPost> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| NbaopsError::config(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(HyperHttpPost {
            client: Client::builder(TokioExecutor::new()).build(https),
        })
    }
}

fn transport(message: String) -> NbaopsError {
    NbaopsError::Dependency {
        service: "http",
        message,
        retryable: true,
    }
}

#[async_trait]
impl HttpPost for HyperHttpPost {
    async fn post_json(&self, url: &str, body: &Value, timeout: Duration) -> Result<HttpReply> {
        let payload = serde_json::to_vec(body)
            .map_err(|e| NbaopsError::InvalidEvent(format!("body not serialisable: {e}")))?;
        // Never echo the URL: a Slack webhook URL is the secret itself.
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", "nbaops-alert-router")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|_| NbaopsError::config("alert endpoint is not a valid URL"))?;
        let exchange = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| transport(format!("request failed: {}", error_chain(&e))))?;
            let status = resp.status().as_u16();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            let text =
                String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_REPLY_BODY)]).to_string();
            Ok(HttpReply { status, body: text })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(transport(format!(
                "timed out after {} ms",
                timeout.as_millis()
            ))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        parts.push(s.to_string());
        cur = s.source();
    }
    parts.join(": ")
}
