//! alert-router: wiring only. Like `runtime::serve_with`, except that the reply may be an HTTP
//! response (the acknowledgement links hit a Lambda function URL, which needs a status code).

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::Value;
use tracing::Instrument;

use alert_router::handler::{handle, init, Router, FUNCTION};
use nbaops_shared::runtime::{Deps, Invocation};
use nbaops_shared::telemetry;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    telemetry::init();
    let built = match Deps::from_env_with_clients(FUNCTION).await {
        Ok((deps, aws)) => init(&deps, &aws).await.map(|r| (deps, r)),
        Err(e) => Err(e),
    };
    let (deps, router) = match built {
        Ok(v) => v,
        Err(e) => {
            tracing::error!(error = %e, error_type = e.error_type(), "init failed");
            return Err(Box::new(e) as lambda_runtime::Error);
        }
    };
    tracing::info!(env = %deps.cfg.env, "initialised");
    let deps: &'static Deps = Box::leak(Box::new(deps));
    let router: &'static Router = Box::leak(Box::new(router));
    let env = deps.cfg.env.to_string();
    lambda_runtime::run(service_fn(|ev: LambdaEvent<Value>| {
        let inv = Invocation {
            request_id: ev.context.request_id.clone(),
            now: chrono::Utc::now(),
        };
        let span = telemetry::invocation_span(&inv.request_id, FUNCTION, &env);
        let env = env.clone();
        async move {
            let started = std::time::Instant::now();
            let res = handle(ev.payload, inv, deps, router).await;
            let (sent, errors) = match &res {
                Ok(r) => (r.messages_sent() as f64, 0.0),
                Err(_) => (0.0, 1.0),
            };
            telemetry::emit_metrics(
                FUNCTION,
                &env,
                &[
                    ("AlertMessagesSent", sent, "Count"),
                    ("HandlerErrors", errors, "Count"),
                    (
                        "HandlerMillis",
                        started.elapsed().as_secs_f64() * 1000.0,
                        "Milliseconds",
                    ),
                ],
            );
            match res {
                Ok(reply) => Ok::<Value, Diagnostic>(reply.to_value()),
                Err(e) => {
                    tracing::error!(error = %e, error_type = e.error_type(), "invocation failed");
                    Err(Diagnostic::from(e))
                }
            }
        }
        .instrument(span)
    }))
    .await
}
