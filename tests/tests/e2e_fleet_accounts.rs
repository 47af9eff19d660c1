//! A fleet from one deployment (issue #20), end to end: the real scale-on-alarm binary, deployed
//! in the hub (moto's default account A = 123456789012, us-east-1), watches member account
//! B = 222222222222 in two regions through the role it assumes there (`sts:AssumeRole` with the
//! external id). moto keeps state per account and region, and assumed credentials act in the
//! role's account: the same group name exists in A/us-east-1, A/us-west-2, B/us-east-1 and
//! B/us-west-2, and only the one the alarm came from may move.

use nbaops_shared::adapters::DynamoLedger;
use nbaops_shared::fleet::Origin;
use nbaops_shared::guard::{ApprovalRequest, ApprovalState};
use nbaops_tests::approval::{self, Router};
use nbaops_tests::demo::Stack;
use nbaops_tests::function::FunctionUnderTest;
use nbaops_tests::platform::{self, Clients, ENV, LEDGER, WEB};
use nbaops_tests::runtime_api::Outcome;
use nbaops_tests::{function_binary, workspace_root};
use serde_json::{json, Value};

const FN: &str = "scale-on-alarm";
const HUB: &str = "123456789012";
const B: &str = "222222222222";
const STRANGER: &str = "333333333333";
const B_ROLE: &str = "arn:aws:iam::222222222222:role/nbaops-member-dev";
const EXTERNAL_ID: &str = "nbaops-dev-5f1c2e";

fn fixture(path: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(workspace_root().join(path)).unwrap()).unwrap()
}

/// The web group's CPU alarm as a member account's rule forwards it to the hub's bus: the
/// envelope's `account` and `region` (and the alarm ARN) are the member's.
fn alarm_from(account: &str, region: &str, id: &str) -> Value {
    let mut a = fixture("events/cloudwatch-alarm/eventbridge-single-metric-alarm.json");
    a["id"] = json!(id);
    a["account"] = json!(account);
    a["region"] = json!(region);
    let name = a["detail"]["alarmName"].as_str().unwrap_or("").to_string();
    a["detail"]["alarmArn"] = json!(format!(
        "arn:aws:cloudwatch:{region}:{account}:alarm:{name}"
    ));
    a["resources"] = json!([format!(
        "arn:aws:cloudwatch:{region}:{account}:alarm:{name}"
    )]);
    a
}

/// A recorded request's body as text (moto base64-encodes some).
fn body(v: &Value) -> String {
    let raw = v["body"].as_str().unwrap_or("");
    if v["body_encoded"] == Value::Bool(true) {
        aws_smithy_types::base64::decode(raw)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    } else {
        raw.to_string()
    }
}

/// The SigV4 credential scopes (`<key>/<date>/<region>/<service>`) of FN's `operation` requests
/// as moto received them: which keys and which region signed each.
fn scopes(stack: &Stack, operation: &str) -> Vec<(String, String)> {
    stack
        .moto
        .recording()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            let h = |k: &str| {
                v["headers"]
                    .as_object()
                    .and_then(|m| m.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                    .and_then(|(_, v)| v.as_str())
                    .unwrap_or("")
                    .to_string()
            };
            let ua = format!("{} {}", h("x-amz-user-agent"), h("user-agent"));
            ua.contains(&format!("app/{FN}")) && body(v).contains(&format!("Action={operation}"))
        })
        .filter_map(|v| {
            let auth = v["headers"]
                .as_object()?
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))?
                .1
                .as_str()?
                .to_string();
            let scope: Vec<String> = auth
                .split("Credential=")
                .nth(1)?
                .split(',')
                .next()?
                .split('/')
                .map(String::from)
                .collect();
            Some((scope.first()?.clone(), scope.get(2)?.clone()))
        })
        .collect()
}

/// The request bodies of FN's `sts:AssumeRole` calls (its session is `nbaops-<env>-<function>`;
/// the harness's own are `nbaops-tests`).
fn assume_role_bodies(stack: &Stack) -> Vec<String> {
    stack
        .moto
        .recording()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| body(&v))
        .filter(|b| {
            b.contains("Action=AssumeRole")
                && b.contains(&format!("RoleSessionName=nbaops-{ENV}-{FN}"))
        })
        .collect()
}

/// FN's requests that change infrastructure (Auto Scaling, RDS, ElastiCache), as moto saw them.
fn mutations(stack: &Stack) -> Vec<String> {
    stack
        .moto
        .recorded_calls()
        .into_iter()
        .filter(|c| {
            c.app.as_deref() == Some(FN)
                && matches!(c.service.as_str(), "autoscaling" | "rds" | "elasticache")
                && c.is_mutating()
        })
        .map(|c| c.iam_action())
        .collect()
}

async fn desired(c: &Clients) -> i32 {
    platform::group_view(c, WEB).await.unwrap().desired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_from_a_member_scales_its_group_there_and_nowhere_else() {
    let stack = Stack::start(false).await.unwrap();
    let (endpoint, cw) = (&stack.moto.endpoint, &stack.moto.cloudwatch.endpoint);
    // The same group in the hub's other region and in both regions of member B.
    let a_west = Clients::in_region(endpoint, cw, "us-west-2").await;
    let b_east = Clients::assumed(endpoint, cw, "us-east-1", B_ROLE, EXTERNAL_ID).await;
    let b_west = Clients::assumed(endpoint, cw, "us-west-2", B_ROLE, EXTERNAL_ID).await;
    assert_eq!(
        b_west.account().await.unwrap(),
        B,
        "assumed credentials act in B"
    );
    assert_eq!(a_west.account().await.unwrap(), HUB);
    for (c, region) in [
        (&a_west, "us-west-2"),
        (&b_east, "us-east-1"),
        (&b_west, "us-west-2"),
    ] {
        platform::group_in(c, region, WEB, 2, 4, 2, &[("env", ENV), ("tier", "web")])
            .await
            .unwrap();
    }
    // State is per account and region: four groups of one name, each on its own.
    platform::tag_group(&b_west, WEB, "fleet-test", "b-west")
        .await
        .unwrap();
    for c in [&stack.clients, &a_west, &b_east] {
        let tags = c
            .asg
            .describe_auto_scaling_groups()
            .auto_scaling_group_names(WEB)
            .send()
            .await
            .unwrap();
        let g = &tags.auto_scaling_groups()[0];
        assert!(
            g.tags().iter().all(|t| t.key() != Some("fleet-test")),
            "{g:?}"
        );
    }

    stack
        .put_secret(
            &format!("/nbaops/{ENV}/secrets/fleet/external_id"),
            EXTERNAL_ID,
        )
        .await
        .unwrap();
    let accounts = format!("{B}={B_ROLE}");
    let f = FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "us-east-1,us-west-2"),
        ]),
        1,
    )
    .await
    .unwrap();
    assert!(
        assume_role_bodies(&stack).is_empty(),
        "no role is assumed before a member's record arrives"
    );

    // 1. An alarm from B/us-west-2: B's group there, through the assumed role.
    let v = f
        .invoke_ok(alarm_from(B, "us-west-2", "fleet-b-west-1"))
        .await
        .unwrap();
    let action = &v["records"][0]["actions"][0];
    assert_eq!(action["outcome"], "acted", "{v}");
    assert_eq!(
        action["resource"],
        format!("asg:{WEB}@{B}/us-west-2"),
        "the audit record names the account and region: {v}"
    );
    assert_eq!(desired(&b_west).await, 3);
    assert_eq!(desired(&stack.clients).await, 2, "nothing in A/us-east-1");
    assert_eq!(desired(&a_west).await, 2, "nothing in A/us-west-2");
    assert_eq!(desired(&b_east).await, 2, "nothing in B's other region");
    // The scale-out was signed in us-west-2 with the assumed role's keys (not the hub's), and
    // the role was assumed with the external id. (How often is the SDK identity cache's business:
    // moto's clock is the test clock, so its credentials' expiry is in the past of the process's
    // clock and each call fetches anew; in AWS they are kept until 5 minutes before expiry.)
    let signed = scopes(&stack, "SetDesiredCapacity");
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!(signed[0].1, "us-west-2", "{signed:?}");
    assert_ne!(
        signed[0].0, "testing",
        "signed with assumed credentials: {signed:?}"
    );
    let assumed = assume_role_bodies(&stack);
    assert!(!assumed.is_empty());
    for b in &assumed {
        assert!(b.contains(&format!("ExternalId={EXTERNAL_ID}")), "{b}");
        assert!(b.contains("role%2Fnbaops-member-dev"), "{b}");
        assert!(b.contains("222222222222"), "{b}");
    }
    // The audit record on the hub's actions topic and in the hub's ledger names B/us-west-2.
    let audits = platform::drain(&stack.clients, &stack.platform.actions_queue)
        .await
        .unwrap();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert_eq!(audits[0]["resource"], format!("asg:{WEB}@{B}/us-west-2"));
    assert_eq!(audits[0]["outcome"], "acted");
    let counts = platform::ledger_counts(&stack.clients).await.unwrap();
    assert_eq!(counts.get("audit"), Some(&1), "{counts:?}");

    // 2. The same alarm from the hub's own account and region: the hub's group, as before the
    // fleet (its cooldown is not B's: a group of the same name elsewhere is another group).
    let v = f
        .invoke_ok(alarm_from(HUB, "us-east-1", "fleet-hub-1"))
        .await
        .unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(
        v["records"][0]["actions"][0]["resource"],
        format!("asg:{WEB}")
    );
    assert_eq!(desired(&stack.clients).await, 3);
    assert_eq!(desired(&b_west).await, 3);
    assert_eq!(desired(&b_east).await, 2);

    // 3. B's other region: its own group (the same role, clients of their own for that region).
    let v = f
        .invoke_ok(alarm_from(B, "us-east-1", "fleet-b-east-1"))
        .await
        .unwrap();
    assert_eq!(v["records"][0]["actions"][0]["outcome"], "acted", "{v}");
    assert_eq!(desired(&b_east).await, 3);
    assert_eq!(desired(&b_west).await, 3);
    assert_eq!(desired(&a_west).await, 2);

    // 4. An account not in the fleet, and a member's region not watched: "not for me", nothing
    // changed anywhere, no role assumed.
    let before = mutations(&stack).len();
    let assumed_before = assume_role_bodies(&stack).len();
    let v = f
        .invoke_ok(alarm_from(STRANGER, "us-west-2", "fleet-stranger-1"))
        .await
        .unwrap();
    let rec = &v["records"][0];
    assert_eq!(
        rec["not_for_me"],
        format!("account {STRANGER} region us-west-2 is not in fleet.accounts"),
        "{v}"
    );
    assert!(
        rec["actions"].as_array().is_some_and(|a| a.is_empty()),
        "{v}"
    );
    let v = f
        .invoke_ok(alarm_from(B, "eu-west-1", "fleet-b-eu-1"))
        .await
        .unwrap();
    assert_eq!(
        v["records"][0]["not_for_me"],
        format!("account {B} region eu-west-1 is not in fleet.regions"),
        "{v}"
    );
    assert_eq!(mutations(&stack).len(), before, "{:?}", mutations(&stack));
    assert_eq!(assume_role_bodies(&stack).len(), assumed_before);
    assert_eq!(desired(&stack.clients).await, 3);
    assert_eq!(desired(&a_west).await, 2);
    assert_eq!(desired(&b_east).await, 3);
    assert_eq!(desired(&b_west).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_its_external_id_is_an_error_and_nothing_moves() {
    let stack = Stack::start(false).await.unwrap();
    let (endpoint, cw) = (&stack.moto.endpoint, &stack.moto.cloudwatch.endpoint);
    let b_west = Clients::assumed(endpoint, cw, "us-west-2", B_ROLE, EXTERNAL_ID).await;
    platform::group_in(&b_west, "us-west-2", WEB, 2, 4, 2, &[("env", ENV)])
        .await
        .unwrap();
    let accounts = format!("{B}={B_ROLE}");
    let f = FunctionUnderTest::start(
        &function_binary(FN).unwrap(),
        FN,
        &stack.function_env(&[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "us-west-2"),
        ]),
        1,
    )
    .await
    .unwrap();
    let out = f
        .invoke(
            alarm_from(B, "us-west-2", "fleet-no-secret"),
            std::time::Duration::from_secs(30),
        )
        .await
        .unwrap()
        .outcome;
    let err = match out {
        Outcome::Error { message, .. } => message,
        Outcome::Response(v) => panic!("expected a function error, got {v}"),
    };
    assert!(
        err.contains("/nbaops/dev/secrets/fleet/external_id"),
        "the error names the missing secret: {err}"
    );
    assert!(mutations(&stack).is_empty(), "{:?}", mutations(&stack));
    assert_eq!(desired(&b_west).await, 2);
    assert!(assume_role_bodies(&stack).is_empty());
}

/// A member's action that needs a person (issue #20 with #19): asked from B, approved through
/// alert-router's link, carried out in B with B's clients — never on the hub's group of the same
/// name — and once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_approved_action_is_carried_out_in_the_member_once() {
    let stack = Stack::start(false).await.unwrap();
    let (endpoint, cw) = (&stack.moto.endpoint, &stack.moto.cloudwatch.endpoint);
    let b_west = Clients::assumed(endpoint, cw, "us-west-2", B_ROLE, EXTERNAL_ID).await;
    platform::group_in(
        &b_west,
        "us-west-2",
        WEB,
        2,
        4,
        2,
        &[("env", ENV), ("tier", "web")],
    )
    .await
    .unwrap();
    stack
        .put_secret(
            &format!("/nbaops/{ENV}/secrets/fleet/external_id"),
            EXTERNAL_ID,
        )
        .await
        .unwrap();
    let router = Router::start(&stack).await.unwrap();
    let accounts = format!("{B}={B_ROLE}");
    let f = approval::scale_on_alarm(
        &stack,
        &[
            ("NBAOPS_FLEET__ACCOUNTS", &accounts),
            ("NBAOPS_FLEET__REGIONS", "us-west-2"),
            ("NBAOPS_APPROVAL__ASG__SCALE_OUT", "always"),
            ("NBAOPS_APPROVAL__APPROVERS", "alice"),
        ],
    )
    .await
    .unwrap();
    let qualified = format!("asg:{WEB}@{B}/us-west-2");

    // 1. The alarm from B/us-west-2, outside the change window: asked, one request naming B;
    // nothing moves anywhere.
    let v = f
        .invoke_ok(alarm_from(B, "us-west-2", "fleet-ask-1"))
        .await
        .unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "needs-approval", "{v}");
    assert_eq!(a["resource"], qualified.as_str(), "{v}");
    let id = a["approval_id"].as_str().unwrap().to_string();
    let l = DynamoLedger {
        client: stack.clients.ddb.clone(),
        table: LEDGER.into(),
    };
    let req = ApprovalRequest::load(&l, ENV, &id).await.unwrap().unwrap();
    assert_eq!(req.state, ApprovalState::Pending);
    assert_eq!(req.origin, Some(Origin::new(B, "us-west-2")), "{req:?}");
    assert_eq!(req.action.resource, qualified);
    assert!(mutations(&stack).is_empty(), "{:?}", mutations(&stack));
    assert_eq!(
        (desired(&b_west).await, desired(&stack.clients).await),
        (2, 2)
    );

    // 2. Its alert through alert-router: the Approve link; POSTed, approved by alice, scheduled.
    let alerts = platform::drain(&stack.clients, &stack.platform.alerts_queue)
        .await
        .unwrap();
    let asked: Vec<&Value> = alerts
        .iter()
        .filter(|a| a["approval_id"] == id.as_str())
        .collect();
    assert_eq!(asked.len(), 1, "{alerts:?}");
    router
        .invoke(approval::sns_record(&stack, asked[0], "fleet").unwrap())
        .await
        .unwrap();
    let links = router.slack_links();
    let approve = alert_router::link::query_of(&links[0].1);
    assert_eq!(
        (approve["approval"].as_str(), approve["verdict"].as_str()),
        (id.as_str(), "approve"),
        "{links:?}"
    );
    let (status, body) = router.http("POST", &approve).await.unwrap();
    assert_eq!(status, 200, "{body}");
    let s = approval::schedules(&stack).await.unwrap();
    assert_eq!(s.len(), 1, "{s:?}");
    let input = s[0].input.clone();
    assert!(
        mutations(&stack).is_empty(),
        "approving alone changes nothing"
    );

    // 3. Delivered: B's group changes, with B's credentials in us-west-2; the hub's does not.
    let v = f.invoke_ok(input.clone()).await.unwrap();
    let a = &v["records"][0]["actions"][0];
    assert_eq!(a["outcome"], "acted", "{v}");
    assert_eq!(a["resource"], qualified.as_str(), "{v}");
    assert_eq!(a["approval_id"], id.as_str(), "{v}");
    assert_eq!(desired(&b_west).await, 3, "B's group, through the role");
    assert_eq!(desired(&stack.clients).await, 2, "never the hub's group");
    let signed = scopes(&stack, "SetDesiredCapacity");
    assert_eq!(signed.len(), 1, "{signed:?}");
    assert_eq!(signed[0].1, "us-west-2", "{signed:?}");
    assert_ne!(signed[0].0, "testing", "assumed credentials: {signed:?}");
    assert_eq!(
        ApprovalRequest::load(&l, ENV, &id)
            .await
            .unwrap()
            .unwrap()
            .state,
        ApprovalState::Used
    );
    let audit = approval::audit(&stack, &qualified).await.unwrap();
    assert!(
        audit.iter().any(|r| r["function"] == FN
            && r["outcome"] == "acted"
            && r["approval_id"] == id.as_str()
            && r["steps"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| s["step"] == "change_window"
                    && s["note"]
                        .as_str()
                        .is_some_and(|n| n.starts_with("approved by alice at"))))),
        "no acted record of {qualified} naming alice in {audit:#?}"
    );
    assert!(
        approval::audit(&stack, &format!("asg:{WEB}"))
            .await
            .unwrap()
            .is_empty(),
        "nothing audited on the hub's group"
    );

    // 4. Delivered again: nothing more.
    let v = f.invoke_ok(input).await.unwrap();
    assert!(
        v["records"][0]["actions"]
            .as_array()
            .is_some_and(|a| a.is_empty()),
        "{v}"
    );
    assert_eq!(mutations(&stack).len(), 1, "{:?}", mutations(&stack));
    assert_eq!(
        (desired(&b_west).await, desired(&stack.clients).await),
        (3, 2)
    );
}
