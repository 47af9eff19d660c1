//! infra/sql on a real PostgreSQL: idempotent, and each role can do its job and nothing more.

use nbaops_tests::postgres::Postgres;
use nbaops_tests::workspace_root;

#[test]
fn roles_are_idempotent_and_least_privilege() {
    let pg = Postgres::start().unwrap();
    let sql = workspace_root().join("infra/sql");
    pg.psql("postgres", "CREATE ROLE nbaops_app LOGIN").unwrap();
    pg.psql("postgres", "CREATE DATABASE app OWNER nbaops_app")
        .unwrap();
    pg.psql_as("nbaops_app", "app", "CREATE TABLE games(id int primary key, score int); INSERT INTO games SELECT g, g FROM generate_series(1, 1000) g").unwrap();
    for _ in 0..2 {
        pg.psql_file("postgres", "app", &sql.join("01_monitor_role.sql"), &[])
            .unwrap();
        pg.psql_file(
            "postgres",
            "app",
            &sql.join("02_maintenance_role.sql"),
            &[("app_owner", "nbaops_app")],
        )
        .unwrap();
    }
    // The monitor sees every session but cannot write, even where the table would allow it.
    assert_eq!(
        pg.psql_as(
            "nbaops_monitor",
            "app",
            "SELECT pg_has_role('pg_monitor', 'member')"
        )
        .unwrap(),
        "t"
    );
    pg.psql("app", "GRANT INSERT ON games TO nbaops_monitor")
        .unwrap();
    let write = pg.psql_as(
        "nbaops_monitor",
        "app",
        "INSERT INTO games VALUES (5000, 1)",
    );
    assert!(write
        .unwrap_err()
        .to_string()
        .contains("read-only transaction"));
    assert_eq!(
        pg.psql(
            "app",
            "SELECT rolconnlimit FROM pg_roles WHERE rolname = 'nbaops_monitor'"
        )
        .unwrap(),
        "3"
    );
    // The maintenance role vacuums and analyzes the application's tables and may signal runaway backends, without being a superuser.
    pg.psql_as("nbaops_maintenance", "app", "VACUUM (ANALYZE) games")
        .unwrap();
    let vacuumed = pg
        .psql(
            "app",
            "SELECT last_vacuum IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'games'",
        )
        .unwrap();
    assert_eq!(vacuumed, "t");
    assert_eq!(
        pg.psql_as(
            "nbaops_maintenance",
            "app",
            "SELECT pg_has_role('pg_signal_backend', 'member')"
        )
        .unwrap(),
        "t"
    );
    assert_eq!(
        pg.psql(
            "app",
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'nbaops_maintenance'"
        )
        .unwrap(),
        "f"
    );
    // A wrong owner is refused with a message that says what to pass.
    let wrong = pg.psql_file(
        "postgres",
        "app",
        &sql.join("02_maintenance_role.sql"),
        &[("app_owner", "nobody_here")],
    );
    assert!(wrong.unwrap_err().to_string().contains("app_owner"));
}
