use std::path::{Path, PathBuf};

use nbaops_tests::http::http;
use nbaops_tests::moto::Moto;

fn venv() -> PathBuf {
    std::env::var_os("NBAOPS_VENV").map_or_else(
        || nbaops_tests::workspace_root().join(".venv"),
        PathBuf::from,
    )
}

#[tokio::test]
async fn moto_starts_resets_and_leaves_nothing_behind() {
    let moto = Moto::start(&venv()).await.unwrap();
    let pid = moto.pid();
    assert_eq!(moto.endpoint, format!("http://127.0.0.1:{}", moto.port));
    let (status, _) = http("GET", &format!("{}/moto-api/", moto.endpoint), None, &[])
        .await
        .unwrap();
    assert_eq!(status, 200);

    // moto falls back to S3 for unsigned requests: a bucket is the cheapest state to create.
    let buckets = || async {
        String::from_utf8(
            http("GET", &format!("{}/", moto.endpoint), None, &[])
                .await
                .unwrap()
                .1,
        )
        .unwrap()
    };
    let (status, _) = http("PUT", &format!("{}/reset-probe", moto.endpoint), None, &[])
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(buckets().await.contains("reset-probe"));
    moto.reset().await.unwrap();
    assert!(!buckets().await.contains("reset-probe"));

    let env = moto.aws_env();
    assert!(env.contains(&("AWS_ENDPOINT_URL".into(), moto.endpoint.clone())));
    assert!(env.contains(&("AWS_EC2_METADATA_DISABLED".into(), "true".into())));

    drop(moto);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "moto pid {pid} still exists"
    );
}

#[tokio::test]
async fn two_motos_side_by_side() {
    let (a, b) = (
        Moto::start(&venv()).await.unwrap(),
        Moto::start(&venv()).await.unwrap(),
    );
    assert_ne!(a.port, b.port);
    http("PUT", &format!("{}/only-in-a", a.endpoint), None, &[])
        .await
        .unwrap();
    let (_, listing) = http("GET", &format!("{}/", b.endpoint), None, &[])
        .await
        .unwrap();
    assert!(!String::from_utf8_lossy(&listing).contains("only-in-a"));
}

#[tokio::test]
async fn missing_venv_is_a_clear_error() {
    let err = Moto::start(Path::new("/nonexistent-venv"))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("scripts/setup.sh"), "{err}");
}
