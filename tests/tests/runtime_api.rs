use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbaops_tests::function::{peak_rss_kb, FunctionProcess, FunctionUnderTest};
use nbaops_tests::http::http;
use nbaops_tests::runtime_api::{Outcome, RuntimeApi};
use serde_json::{json, Value};

const FAKE: &str = env!("CARGO_BIN_EXE_fake-echo");
const WAIT: Duration = Duration::from_secs(10);

fn response(outcome: &Outcome) -> &Value {
    match outcome {
        Outcome::Response(value) => value,
        Outcome::Error { .. } => panic!("expected a response, got {outcome:?}"),
    }
}

#[tokio::test]
async fn sequential_invocations_echo_with_lambda_headers() {
    let extra = [("NBAOPS_EXTRA".to_string(), "1".to_string())];
    let function = FunctionUnderTest::start(Path::new(FAKE), "echo", &extra, 1)
        .await
        .unwrap();
    let mut ids = HashSet::new();
    for i in 0..3 {
        let invocation = function.invoke(json!({"n": i}), WAIT).await.unwrap();
        let answer = response(&invocation.outcome);
        assert_eq!(answer["echo"], json!({"n": i}));
        assert_eq!(
            answer["arn"],
            "arn:aws:lambda:us-east-1:123456789012:function:echo"
        );
        let deadline: u128 = answer["deadline_ms"].as_str().unwrap().parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(
            deadline > now + 50_000 && deadline <= now + 60_000,
            "deadline {deadline}, now {now}"
        );
        assert!(answer["trace_id"].as_str().unwrap().starts_with("Root=1-"));
        assert!(ids.insert(invocation.request_id));
    }

    // Only PATH, HOME, the Lambda variables, the harness's own (test clock, caller name in the
    // AWS user agent, the test CA) and ours: nothing from the test's environment.
    let answer = response(&function.invoke(json!({}), WAIT).await.unwrap().outcome).clone();
    let env: Vec<&str> = answer["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        env.contains(&"NBAOPS_EXTRA") && env.contains(&"AWS_LAMBDA_FUNCTION_NAME"),
        "{env:?}"
    );
    assert!(
        env.iter().all(|k| [
            "PATH",
            "HOME",
            "NBAOPS_EXTRA",
            "NBAOPS_TEST_NOW",
            "AWS_SDK_UA_APP_ID",
            "NBAOPS_PG__CA_BUNDLE_PATH"
        ]
        .contains(k)
            || k.starts_with("AWS_LAMBDA_")),
        "{env:?}"
    );

    assert!(
        function.logs().contains("fake-echo: handling"),
        "{}",
        function.logs()
    );
    assert!(peak_rss_kb(function.processes()[0].pid()).unwrap() > 0);
}

#[tokio::test]
async fn concurrent_invocations_spread_over_processes() {
    let function = Arc::new(
        FunctionUnderTest::start(Path::new(FAKE), "echo", &[], 3)
            .await
            .unwrap(),
    );
    let started = Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..10 {
        let function = Arc::clone(&function);
        calls.spawn(async move {
            function
                .invoke(json!({"n": i, "sleep_ms": 300}), WAIT)
                .await
        });
    }
    let mut pids = HashSet::new();
    let mut seen = HashSet::new();
    while let Some(result) = calls.join_next().await {
        let answer = response(&result.unwrap().unwrap().outcome).clone();
        pids.insert(answer["pid"].as_u64().unwrap());
        seen.insert(answer["echo"]["n"].as_u64().unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(seen.len(), 10);
    assert_eq!(pids.len(), 3, "all three processes served");
    // 10 events of 300 ms on 3 processes: 4 rounds, not 10.
    assert!(
        elapsed >= Duration::from_millis(1200) && elapsed < Duration::from_millis(2800),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn function_error_is_an_outcome() {
    let function = FunctionUnderTest::start(Path::new(FAKE), "echo", &[], 1)
        .await
        .unwrap();
    let invocation = function.invoke(json!({"fail": true}), WAIT).await.unwrap();
    assert_eq!(
        invocation.outcome,
        Outcome::Error {
            error_type: "EchoError".into(),
            message: "asked to fail".into()
        }
    );
    // The process keeps serving after an error.
    let again = function.invoke(json!({"ok": 1}), WAIT).await.unwrap();
    assert_eq!(response(&again.outcome)["echo"], json!({"ok": 1}));
}

#[tokio::test]
async fn no_process_means_timeout() {
    let api = RuntimeApi::start("nobody").await.unwrap();
    let started = Instant::now();
    let err = api
        .invoke(json!({}), Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // The timed-out event was withdrawn: a process starting now gets the next one.
    let process = FunctionProcess::spawn(Path::new(FAKE), "nobody", &api.address(), &[]).unwrap();
    let invocation = api.invoke(json!({"second": true}), WAIT).await.unwrap();
    assert_eq!(
        response(&invocation.outcome)["echo"],
        json!({"second": true}),
        "{}",
        process.logs()
    );
}

#[tokio::test]
async fn init_error_fails_invocations() {
    let api = RuntimeApi::start("broken").await.unwrap();
    let init_fail = [("FAKE_ECHO_INIT_ERROR".to_string(), "1".to_string())];
    let process =
        FunctionProcess::spawn(Path::new(FAKE), "broken", &api.address(), &init_fail).unwrap();
    let expected = Outcome::Error {
        error_type: "InitFailed".into(),
        message: "fake init failure".into(),
    };
    // Pending when the init error arrives, and afterwards.
    assert_eq!(api.invoke(json!({}), WAIT).await.unwrap().outcome, expected);
    assert_eq!(api.invoke(json!({}), WAIT).await.unwrap().outcome, expected);
    assert_eq!(api.init_error(), Some(expected));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(process.exit_status().is_some_and(|s| !s.success()));

    // FunctionUnderTest reports a failed init at start, with the logs.
    let err = FunctionUnderTest::start(Path::new(FAKE), "broken", &init_fail, 1)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("InitFailed"), "{err}");
}

#[tokio::test]
async fn invoke_api_over_http() {
    let function = FunctionUnderTest::start(Path::new(FAKE), "echo", &[], 1)
        .await
        .unwrap();
    let url = format!(
        "http://{}/2015-03-31/functions/echo/invocations",
        function.api().address()
    );
    let (status, body) = http("POST", &url, Some(br#"{"via":"http"}"#), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["echo"], json!({"via": "http"}));

    let (status, body) = http("POST", &url, Some(br#"{"fail":true}"#), &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["errorType"],
        "EchoError"
    );

    let (status, _) = http(
        "GET",
        &format!("http://{}/nope", function.api().address()),
        None,
        &[],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
}

#[tokio::test]
async fn keep_alive_connection_serves_several_requests() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let api = RuntimeApi::start("raw").await.unwrap();
    let mut stream = tokio::net::TcpStream::connect(api.address()).await.unwrap();
    // Two requests on one connection, as hyper's pooled client does.
    let one = "POST /2018-06-01/runtime/invocation/x/response HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
    stream
        .write_all(format!("{one}{one}").as_bytes())
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while seen.matches("HTTP/1.1 410").count() < 2 {
        let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!seen.contains("Connection: close"));
}
