use nbaops_tests::postgres::Postgres;

#[test]
fn primary_replica_promote_and_cleanup() {
    let pg = Postgres::start().unwrap();
    assert_eq!(pg.psql("postgres", "select 1").unwrap(), "1");
    assert_eq!(
        pg.url("app"),
        format!(
            "postgres://postgres@db.nbaops.test:{}/app?hostaddr=127.0.0.1",
            pg.port
        )
    );
    assert_eq!(pg.psql("postgres", "show ssl").unwrap(), "on");
    assert_eq!(
        pg.psql("postgres", "show password_encryption").unwrap(),
        "scram-sha-256"
    );
    assert_eq!(
        pg.psql("postgres", "show shared_preload_libraries")
            .unwrap(),
        "pg_stat_statements"
    );
    pg.psql(
        "postgres",
        "create table t (id int); insert into t values (1)",
    )
    .unwrap();

    let replica = pg.start_replica().unwrap();
    assert_ne!(replica.port, pg.port);
    assert_eq!(
        pg.psql("postgres", "select count(*) from pg_stat_replication")
            .unwrap(),
        "1"
    );
    assert_eq!(
        replica
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "t"
    );
    assert_eq!(
        replica.psql("postgres", "select count(*) from t").unwrap(),
        "1"
    );
    let err = replica
        .psql("postgres", "insert into t values (2)")
        .unwrap_err();
    assert!(err.to_string().contains("read-only transaction"), "{err}");

    replica.promote().unwrap();
    assert_eq!(
        replica
            .psql("postgres", "select pg_is_in_recovery()")
            .unwrap(),
        "f"
    );
    replica
        .psql("postgres", "insert into t values (2)")
        .unwrap();

    let dirs = [pg.dir.clone(), replica.dir.clone()];
    drop(replica);
    drop(pg);
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn psql_error_carries_the_message() {
    let pg = Postgres::start().unwrap();
    let err = pg
        .psql("postgres", "select * from no_such_table")
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}
