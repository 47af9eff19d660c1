//! pg-health and vacuum-trigger on the demo PostgreSQL (the Stack passes its URL as the
//! `demo` database): a healthy scan, a bulk delete that leaves the table 80 % dead, the bloat
//! finding (measured with pgstattuple), then the guarded VACUUM (ANALYZE). Last, autovacuum's
//! failures as the PostgreSQL log reports them (docs/pg-logs.md): the CloudWatch Logs
//! subscription delivers them and pg-health alerts, opening no database session.

use super::{Before, Scene};

pub fn scenes() -> Vec<Scene> {
    use Before::*;
    vec![
        Scene {
            title: "pg-health: scheduled scan of a healthy database (first run takes the counter baseline)",
            function: "pg-health",
            fixture: "events/schedule/pg-health.json",
            before: Sql(
                "app",
                "create table demo_events (id int, payload text) with (autovacuum_enabled = false); \
                 insert into demo_events select g, repeat('x', 100) from generate_series(1, 50000) g",
            ),
        },
        Scene {
            title: "pg-health: a bulk delete left 80 % of demo_events dead (autovacuum off on it)",
            function: "pg-health",
            fixture: "events/schedule/pg-health.json",
            before: Sql("app", "delete from demo_events where id % 5 <> 0"),
        },
        Scene {
            title: "vacuum-trigger: scheduled maintenance vacuums the bloated table through the guard",
            function: "vacuum-trigger",
            fixture: "events/schedule/vacuum-trigger.json",
            before: Nothing,
        },
        Scene {
            title: "pg-health: the PostgreSQL log reports autovacuum cancelled twice on player_stats, failing on lineups, and a wraparound warning",
            function: "pg-health",
            fixture: "events/cloudwatch-logs/rds-postgresql-autovacuum.json",
            before: Nothing,
        },
    ]
}
