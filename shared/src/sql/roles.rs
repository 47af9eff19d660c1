//! Which role a maintenance statement runs as. Below PostgreSQL 17 vacuum-trigger's role holds
//! none of the tables' owner's rights (infra/sql/02_maintenance_role.sql): it may become the owner
//! with `SET ROLE`, and does so only around the one statement that needs it (VACUUM, ANALYZE,
//! REINDEX, VACUUM FULL, DROP INDEX of a table it does not own), then `RESET ROLE`. From 17 the
//! MAINTAIN privilege (`pg_maintain`) lets it maintain any table as itself: no role switch.

use super::{quote_ident, PgVersion};

/// The first major version whose MAINTAIN privilege lets a non-owner VACUUM, ANALYZE and REINDEX.
pub const MAINTAIN_PRIVILEGE_SINCE: i64 = 17;

/// The `pg_has_role` mode that says "this session may SET ROLE to it": `MEMBER` up to 15, `SET`
/// from 16 (a membership may then be granted `WITH SET FALSE`), none from 17 (no role switch).
pub fn set_role_mode(v: PgVersion) -> Option<&'static str> {
    match v.major() {
        m if m >= MAINTAIN_PRIVILEGE_SINCE => None,
        16 => Some("SET"),
        _ => Some("MEMBER"),
    }
}

/// SQL: whether the session may SET ROLE to `role` (an oid or name expression); `false` from 17.
pub fn may_set_role(v: PgVersion, role: &str) -> String {
    match set_role_mode(v) {
        Some(mode) => format!("pg_has_role({role}, '{mode}')"),
        None => "false".to_string(),
    }
}

/// SQL: the role to SET ROLE to before maintaining a relation — its owner's name, when `direct`
/// (the session may already, as itself) is false and the owner is reachable by SET ROLE — else
/// NULL (always NULL from 17).
pub fn set_role_column(v: PgVersion, direct: &str, owner: &str, owner_name: &str) -> String {
    match set_role_mode(v) {
        Some(_) => format!(
            "CASE WHEN NOT ({direct}) AND {} THEN ({owner_name})::text END",
            may_set_role(v, owner)
        ),
        None => "NULL::text".to_string(),
    }
}

/// One maintenance statement and the role switch around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOwner {
    /// `SET ROLE "owner"`, run just before the statement.
    pub set_role: Option<String>,
    pub statement: String,
    /// `RESET ROLE`, run after the statement whether it succeeded or not.
    pub reset_role: Option<&'static str>,
}

pub const RESET_ROLE: &str = "RESET ROLE";

/// `statement` as the relation's owner when the row said so (`set_role`) and the server is older
/// than 17; otherwise the statement alone.
pub fn as_owner(v: PgVersion, set_role: Option<&str>, statement: String) -> AsOwner {
    match set_role {
        Some(owner) if set_role_mode(v).is_some() => AsOwner {
            set_role: Some(format!("SET ROLE {}", quote_ident(owner))),
            statement,
            reset_role: Some(RESET_ROLE),
        },
        _ => AsOwner {
            set_role: None,
            statement,
            reset_role: None,
        },
    }
}

impl AsOwner {
    /// Every statement in order, for the audit and for people.
    pub fn statements(&self) -> Vec<&str> {
        let mut v = Vec::with_capacity(3);
        if let Some(s) = &self.set_role {
            v.push(s.as_str());
        }
        v.push(self.statement.as_str());
        if let Some(r) = self.reset_role {
            v.push(r);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V13: PgVersion = PgVersion(130011);
    const V15: PgVersion = PgVersion(150004);
    const V16: PgVersion = PgVersion(160002);
    const V17: PgVersion = PgVersion(170000);

    #[test]
    fn role_switch_per_version() {
        let vacuum = || "VACUUM (ANALYZE) \"public\".\"t\"".to_string();
        for v in [V13, V15, V16] {
            let s = as_owner(v, Some("app \"owner\""), vacuum());
            assert_eq!(
                s.statements(),
                vec![
                    "SET ROLE \"app \"\"owner\"\"\"",
                    "VACUUM (ANALYZE) \"public\".\"t\"",
                    "RESET ROLE"
                ],
                "{v:?}"
            );
        }
        // 17+: MAINTAIN, never a role switch, whatever the row says.
        let s = as_owner(V17, Some("app"), vacuum());
        assert_eq!(s.statements(), vec!["VACUUM (ANALYZE) \"public\".\"t\""]);
        assert_eq!(s.set_role, None);
        assert_eq!(s.reset_role, None);
        // A table we may maintain as ourselves: the statement alone, on every version.
        for v in [V15, V16, V17] {
            assert_eq!(as_owner(v, None, vacuum()).statements().len(), 1);
        }
    }

    #[test]
    fn set_role_check_per_version() {
        assert_eq!(set_role_mode(V13), Some("MEMBER"));
        assert_eq!(set_role_mode(V15), Some("MEMBER"));
        assert_eq!(set_role_mode(V16), Some("SET"));
        assert_eq!(set_role_mode(V17), None);
        assert_eq!(
            set_role_column(V15, "t.can_maintain", "t.owner::name", "t.owner"),
            "CASE WHEN NOT (t.can_maintain) AND pg_has_role(t.owner::name, 'MEMBER') THEN (t.owner)::text END"
        );
        assert!(set_role_column(V16, "d", "o", "n").contains("pg_has_role(o, 'SET')"));
        assert_eq!(set_role_column(V17, "d", "o", "n"), "NULL::text");
        assert_eq!(may_set_role(V17, "o"), "false");
        // USAGE (inherited rights) is never what decides a role switch.
        for v in [V13, V15, V16, V17] {
            assert!(!set_role_column(v, "d", "o", "n").contains("USAGE"));
        }
    }
}
