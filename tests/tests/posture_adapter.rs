//! `SdkPosture` (posture-check's adapter, issue #21) against moto: the seed of
//! `nbaops_tests::posture` (one compliant and one non-compliant resource per rule), then every
//! method of the port, asserting the facts of the seeded resources. Where moto ignores a field or
//! lacks an operation the test asserts what moto does return and says so (docs/posture.md,
//! "On the emulator"); nothing moto fakes is asserted as if it were AWS.

use std::collections::BTreeMap;

use chrono::Duration;
use nbaops_shared::ports::{DbFacts, Posture, Tags};
use nbaops_tests::clock;
use nbaops_tests::demo::Stack;
use nbaops_tests::posture::{self, BAD_PARAMS, OK_DB, OK_PARAMS};

fn full_tags(extra: &[(&str, &str)]) -> Tags {
    let mut t: Tags = [
        ("nbaops:env", "prod"),
        ("team", "platform"),
        ("cost-center", "nba"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        t.insert(k.to_string(), v.to_string());
    }
    t
}

fn by_id<T: Clone>(items: &[T], id: impl Fn(&T) -> &str, want: &str) -> T {
    items
        .iter()
        .find(|i| id(i) == want)
        .cloned()
        .unwrap_or_else(|| panic!("{want} not returned"))
}

#[tokio::test(flavor = "multi_thread")]
async fn posture_adapter_reads_the_seeded_platform() {
    let stack = Stack::start(false).await.unwrap();
    let c = &stack.clients;
    let seeded = posture::seed(c, clock::now()).await.unwrap();
    let p = posture::adapter(c);
    // From here on only the adapter calls AWS: what it sends is recorded from this index.
    let first_call = stack.moto.calls().len();

    // --- RDS instances
    let dbs = p.db_instances().await.unwrap();
    let db = |id: &str| by_id(&dbs, |d: &DbFacts| d.id.as_str(), id);
    let ok = db(OK_DB);
    assert!(ok.arn.ends_with(&format!(":db:{OK_DB}")), "{}", ok.arn);
    assert_eq!(
        (ok.engine.as_str(), ok.engine_version.as_str()),
        ("postgres", "15.7")
    );
    assert!(ok.storage_encrypted && !ok.publicly_accessible && ok.deletion_protection);
    assert!(ok.multi_az && ok.auto_minor_version_upgrade);
    assert_eq!(ok.backup_retention_days, 7);
    assert_eq!(ok.monitoring_interval_seconds, 60);
    // Not asked for in the seed (moto ignores EnablePerformanceInsights anyway).
    assert!(!ok.performance_insights);
    assert_eq!(ok.parameter_groups, vec![OK_PARAMS.to_string()]);
    assert_eq!(
        (ok.cluster.as_deref(), ok.replica_of.as_deref()),
        (None, None)
    );
    assert_eq!(ok.tags, full_tags(&[]));
    let bad = |rule: &str| db(&seeded.pair(rule).unwrap().bad);
    assert!(bad("rds.public").publicly_accessible);
    assert!(!bad("rds.encryption").storage_encrypted);
    assert_eq!(
        bad("rds.force_ssl").parameter_groups,
        vec![BAD_PARAMS.to_string()]
    );
    assert!(!bad("rds.deletion_protection").deletion_protection);
    assert!(!bad("rds.multi_az").multi_az);
    assert_eq!(bad("rds.backup_retention").backup_retention_days, 1);
    assert!(!bad("rds.minor_version_upgrade").auto_minor_version_upgrade);
    assert_eq!(bad("rds.monitoring").monitoring_interval_seconds, 0);
    let untagged = bad("tags.missing");
    assert_eq!(
        untagged.tags,
        [("nbaops:env".to_string(), "prod".to_string())].into()
    );
    // Each bad database breaks its own rule only.
    for (rule, pair) in &seeded.rules {
        if rule.starts_with("rds.") && *rule != "rds.snapshot_public" {
            let d = db(&pair.bad);
            assert_eq!(d.publicly_accessible, *rule == "rds.public", "{rule}");
            assert_eq!(d.storage_encrypted, *rule != "rds.encryption", "{rule}");
        }
    }

    // --- DB parameters
    assert_eq!(
        p.db_parameter(OK_PARAMS, "rds.force_ssl")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        p.db_parameter(BAD_PARAMS, "rds.force_ssl")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    assert_eq!(
        p.db_parameter(OK_PARAMS, "log_min_duration_statement")
            .await
            .unwrap(),
        None
    );

    // --- manual snapshots and their restore attribute
    let snaps = p.db_snapshots().await.unwrap();
    let snap = |id: &str| by_id(&snaps, |s| s.id.as_str(), id);
    let pub_pair = seeded.pair("rds.snapshot_public").unwrap();
    assert!(snap(&pub_pair.bad).public);
    let private = snap(&pub_pair.ok);
    assert!(!private.public);
    assert_eq!(
        (private.kind.as_str(), private.instance.as_str()),
        ("manual", OK_DB)
    );
    assert_eq!(private.allocated_gb, 20);
    assert_eq!(private.tags, full_tags(&[]));
    let created = private.created.expect("snapshot create time");
    assert!(
        (created - seeded.at).num_minutes().abs() <= 5,
        "{created} vs {}",
        seeded.at
    );
    let unused = seeded.pair("unused.snapshot").unwrap();
    assert!(snap(&unused.ok).id.starts_with("nbaops-monthly-"));
    assert!(!snap(&unused.bad).public);

    // --- automated backups replicated to a DR region: moto replicates nothing
    assert_eq!(
        p.replicated_backups("us-west-2").await.unwrap(),
        Vec::<String>::new()
    );

    // --- caches
    let caches = p.caches().await.unwrap();
    let cache = |id: &str| by_id(&caches, |c| c.id.as_str(), id);
    let ok_cache = cache("posture-ok-cache");
    assert_eq!(ok_cache.engine, "redis");
    assert_eq!(
        (ok_cache.transit_encryption, ok_cache.at_rest_encryption),
        (Some(true), Some(true))
    );
    assert!(
        ok_cache.arn.ends_with(":replicationgroup:posture-ok-cache"),
        "{}",
        ok_cache.arn
    );
    assert_eq!(ok_cache.tags, full_tags(&[]), "tags from the Tagging API");
    // moto lists no member cluster of a replication group in DescribeCacheClusters: neither the
    // engine version nor the security groups of a group can be read there.
    assert_eq!(ok_cache.engine_version, "");
    assert!(ok_cache.security_groups.is_empty());
    let no_rest = cache(&seeded.pair("cache.at_rest_encryption").unwrap().bad);
    assert_eq!(
        (no_rest.transit_encryption, no_rest.at_rest_encryption),
        (Some(true), Some(false))
    );
    let no_tls = cache(&seeded.pair("cache.transit_encryption").unwrap().bad);
    assert_eq!(
        (no_tls.engine.as_str(), no_tls.engine_version.as_str()),
        ("memcached", "1.6.22")
    );
    assert_eq!(
        (no_tls.transit_encryption, no_tls.at_rest_encryption),
        (Some(false), None)
    );
    assert_eq!(no_tls.tags, full_tags(&[]));
    let behind_open = cache("posture-bad-open-sg");
    assert_eq!(behind_open.transit_encryption, Some(true));
    // moto drops SecurityGroupIds of CreateCacheCluster: no SecurityGroups in the description.
    assert!(behind_open.security_groups.is_empty());
    // The platform's own cache (Memcached, moto's default version) is read too.
    let dev = cache(nbaops_tests::platform::CACHE);
    assert_eq!(dev.engine, "memcached");

    // --- security groups
    let sg_pair = seeded.pair("cache.open_security_group").unwrap();
    let sgs = p
        .security_groups(&[sg_pair.ok.clone(), sg_pair.bad.clone()])
        .await
        .unwrap();
    assert_eq!(sgs.len(), 2);
    let sg = |id: &str| by_id(&sgs, |g| g.id.as_str(), id);
    assert_eq!(
        sg(&sg_pair.bad).open_to_world,
        vec!["tcp 11211-11211".to_string()]
    );
    assert_eq!(sg(&sg_pair.bad).name, "posture-bad-open-sg");
    assert!(sg(&sg_pair.ok).open_to_world.is_empty());
    assert!(p.security_groups(&[]).await.unwrap().is_empty());

    // --- volumes, addresses, instances
    let vols = p.volumes().await.unwrap();
    let vol = |id: &str| by_id(&vols, |v| v.id.as_str(), id);
    let v_pair = seeded.pair("unused.volume").unwrap();
    let loose = vol(&v_pair.bad);
    assert_eq!(loose.state, "available");
    assert_eq!((loose.size_gb, loose.volume_type.as_str()), (8, "gp3"));
    assert_eq!(
        loose.tags,
        full_tags(&[("Name", "posture-bad-unused-volume")])
    );
    let vc = loose.created.expect("volume create time");
    assert!(
        (vc - seeded.at).num_minutes().abs() <= 5,
        "{vc} vs {}",
        seeded.at
    );
    assert_eq!(vol(&v_pair.ok).state, "in-use");

    let addrs = p.addresses().await.unwrap();
    let addr = |id: &str| by_id(&addrs, |a| a.allocation_id.as_str(), id);
    let a_pair = seeded.pair("unused.address").unwrap();
    assert!(!addr(&a_pair.bad).associated, "{:?}", addr(&a_pair.bad));
    assert!(addr(&a_pair.ok).associated);
    assert!(!addr(&a_pair.bad).public_ip.is_empty());
    assert_eq!(
        addr(&a_pair.bad).tags,
        full_tags(&[("Name", "posture-bad-unused-address")])
    );

    let insts = p.instances().await.unwrap();
    let inst = |id: &str| by_id(&insts, |i| i.id.as_str(), id);
    let i_pair = seeded.pair("unused.stopped_instance").unwrap();
    let stopped = inst(&i_pair.bad);
    assert_eq!(stopped.state, "stopped");
    // moto writes "User initiated (YYYY-MM-DD HH:MM:SS UTC)" on its (the test) clock.
    let since = stopped
        .stopped_since
        .expect("stop time from StateTransitionReason");
    assert!(
        (since - seeded.at).num_minutes().abs() <= 5,
        "{since} vs {}",
        seeded.at
    );
    assert!(!stopped.volume_ids.is_empty(), "the root volume");
    assert_eq!(stopped.instance_type, "t3.micro");
    assert_eq!(
        stopped.tags,
        full_tags(&[("Name", "posture-bad-stopped-instance")])
    );
    let running = inst(&i_pair.ok);
    assert_eq!(
        (running.state.as_str(), running.stopped_since),
        ("running", None)
    );
    assert!(
        running.volume_ids.contains(&v_pair.ok),
        "{:?}",
        running.volume_ids
    );

    // --- load balancers and their traffic over the look-back ending at judge_at
    let until = seeded.judge_at;
    let lbs = p
        .load_balancers(until - Duration::days(14), until)
        .await
        .unwrap();
    let lb = |name: &str| by_id(&lbs, |l| l.name.as_str(), name);
    let lb_pair = seeded.pair("unused.load_balancer").unwrap();
    let busy = lb(&lb_pair.ok);
    assert_eq!(busy.kind, "application");
    assert!(
        busy.arn.contains(":loadbalancer/app/posture-ok-lb/"),
        "{}",
        busy.arn
    );
    // The seed's datapoints (100 a day), read back by namespace, metric and dimension.
    let traffic = busy.traffic.expect("RequestCount datapoints");
    assert!((1300.0..=1500.0).contains(&traffic), "{traffic}");
    assert_eq!(busy.tags, full_tags(&[]));
    let idle = lb(&lb_pair.bad);
    assert_eq!(idle.traffic, None, "no datapoint at all");
    let lc = idle.created.expect("load balancer created time");
    assert!(
        (lc - seeded.at).num_minutes().abs() <= 5,
        "{lc} vs {}",
        seeded.at
    );

    // --- the Tagging API by type
    let tagged = p.tagged_resources(&["rds:db".to_string()]).await.unwrap();
    let arns: BTreeMap<&str, &Tags> = tagged.iter().map(|t| (t.arn.as_str(), &t.tags)).collect();
    assert_eq!(arns.get(untagged.arn.as_str()).map(|t| t.len()), Some(1));
    assert_eq!(arns.get(ok.arn.as_str()), Some(&&full_tags(&[])));
    let volumes_tagged = p
        .tagged_resources(&["ec2:volume".to_string()])
        .await
        .unwrap();
    assert!(volumes_tagged
        .iter()
        .any(|t| t.arn.ends_with(&format!("volume/{}", v_pair.bad))));

    // moto's Tagging API returns no ElastiCache resource for a type filter (it does by ARN,
    // above, which is how the adapter reads the caches' tags).
    let caches_tagged = p
        .tagged_resources(&["elasticache:cluster".to_string()])
        .await
        .unwrap();
    assert!(caches_tagged.is_empty(), "{caches_tagged:?}");

    // --- the two fixes
    let dp = seeded.pair("rds.deletion_protection").unwrap();
    p.enable_deletion_protection(&dp.bad).await.unwrap();
    let fixed = p.db_instances().await.unwrap();
    assert!(by_id(&fixed, |d: &DbFacts| d.id.as_str(), &dp.bad).deletion_protection);
    let fill: Tags = [("team", "platform"), ("cost-center", "nba")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    p.add_rds_tags(&untagged.arn, &fill).await.unwrap();
    let fixed = p.db_instances().await.unwrap();
    assert_eq!(
        by_id(&fixed, |d: &DbFacts| d.id.as_str(), &untagged.id).tags,
        full_tags(&[])
    );

    // --- what reached the emulator: exactly the operations posture-check's role allows
    // (functions/posture-check/src/aws_operations.rs, held against the template by
    // infra/tests/check_aws_operations.py).
    let sent: std::collections::BTreeSet<String> = stack
        .moto
        .calls()
        .iter()
        .skip(first_call)
        .map(|call| call.iam_action().replace("tagging:", "tag:"))
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        "rds:DescribeDBInstances",
        "rds:DescribeDBParameters",
        "rds:DescribeDBSnapshots",
        "rds:DescribeDBSnapshotAttributes",
        "rds:DescribeDBInstanceAutomatedBackups",
        "rds:ModifyDBInstance",
        "rds:AddTagsToResource",
        "elasticache:DescribeReplicationGroups",
        "elasticache:DescribeCacheClusters",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeVolumes",
        "ec2:DescribeAddresses",
        "ec2:DescribeInstances",
        "elasticloadbalancing:DescribeLoadBalancers",
        "cloudwatch:GetMetricStatistics",
        "tag:GetResources",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(sent, expected);

    // --- a second page: moto pages DescribeDBInstances at 100 with a Marker, as RDS does by
    // default (MaxRecords 100). Enough databases for two pages, then every one must be read.
    let before = p.db_instances().await.unwrap().len();
    for n in before..105 {
        c.rds
            .create_db_instance()
            .db_instance_identifier(format!("posture-page-{n}"))
            .db_instance_class("db.t3.micro")
            .engine("postgres")
            .allocated_storage(20)
            .master_username("nbaops")
            .master_user_password("not-a-real-password")
            .send()
            .await
            .unwrap();
    }
    let first_page = c.rds.describe_db_instances().send().await.unwrap();
    assert_eq!(first_page.db_instances().len(), 100);
    assert!(
        first_page.marker().is_some(),
        "moto no longer pages: this proves nothing"
    );
    let all = p.db_instances().await.unwrap();
    assert_eq!(all.len(), 105);
    assert!(all.iter().any(|d| d.id == "posture-page-104"));

    // --- what the seed could not make
    assert!(seeded.not_seeded.contains_key("rds.dr_replication"));
}
