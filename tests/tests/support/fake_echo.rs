//! A stand-in Lambda function that speaks the Runtime API through the harness's own HTTP
//! client, to test the emulator without building lambda_runtime.
//! Event fields: `"fail": true` answers with an error, `"sleep_ms": N` delays the answer.
//! `FAKE_ECHO_INIT_ERROR=1` reports an init error and exits, like a failed cold start.

use std::time::Duration;

use nbaops_tests::http::request;
use serde_json::{json, Value};

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")?;
    let base = format!("http://{api}/2018-06-01/runtime");
    if std::env::var("FAKE_ECHO_INIT_ERROR").is_ok() {
        let error = json!({"errorType": "InitFailed", "errorMessage": "fake init failure"});
        post(&format!("{base}/init/error"), &error).await?;
        return Err("init failed".into());
    }
    let mut env_names: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    env_names.sort();
    loop {
        let next = request("GET", &format!("{base}/invocation/next"), None, &[]).await?;
        let id = next
            .header("lambda-runtime-aws-request-id")
            .ok_or("next: no request id")?
            .to_string();
        let event: Value = serde_json::from_slice(&next.body)?;
        eprintln!("fake-echo: handling {id}");
        if let Some(ms) = event.get("sleep_ms").and_then(Value::as_u64) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if event.get("fail") == Some(&Value::Bool(true)) {
            let error = json!({"errorType": "EchoError", "errorMessage": "asked to fail"});
            post(&format!("{base}/invocation/{id}/error"), &error).await?;
        } else {
            let answer = json!({
                "echo": event,
                "pid": std::process::id(),
                "env": env_names,
                "arn": next.header("lambda-runtime-invoked-function-arn"),
                "deadline_ms": next.header("lambda-runtime-deadline-ms"),
                "trace_id": next.header("lambda-runtime-trace-id"),
            });
            post(&format!("{base}/invocation/{id}/response"), &answer).await?;
        }
    }
}

async fn post(url: &str, body: &Value) -> Result<(), Error> {
    let body = body.to_string();
    let response = request(
        "POST",
        url,
        Some(body.as_bytes()),
        &[("Content-Type", "application/json")],
    )
    .await?;
    if response.status != 202 {
        return Err(format!("POST {url}: {}", response.status).into());
    }
    Ok(())
}
