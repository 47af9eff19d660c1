//! The restore drill's validation queries (backup-guard). WAL archiving is read with
//! [`super::ARCHIVER`].

use super::qualified;

/// Rows of a key table: a missing table fails the statement, which the drill reports as such.
pub fn row_count(schema: &str, table: &str) -> String {
    format!(
        "SELECT count(*)::int8 AS n FROM {}",
        qualified(schema, table)
    )
}

/// md5 over every row's text form, in a stable order, plus the row count: reading every row also
/// proves the restored pages are readable.
pub fn table_checksum(schema: &str, table: &str) -> String {
    format!(
        "SELECT count(*)::int8 AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS checksum FROM {} t",
        qualified(schema, table)
    )
}
