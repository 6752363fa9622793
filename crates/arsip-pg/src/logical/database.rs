//! The database-level part of a dump, as `pg_restore --create` would apply it, retargeted
//! to the database arsip restores into: [`DbPlan`].
//!
//! pg_dump records the database itself in four TOC entries, restored by pg_restore only with
//! `--create`: `DATABASE` (`CREATE DATABASE … TEMPLATE template0 ENCODING … LOCALE …` and
//! the owner), `DATABASE PROPERTIES` (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE …
//! SET`, connection limit, template flag), and the `ACL`, `COMMENT` and `SECURITY LABEL` of
//! `DATABASE name`. `pg_restore --create` can only recreate the dump's own name, so arsip
//! prints those entries' SQL (`pg_restore --create -L <their ids> -f -`), recognises every
//! statement by its keywords ([`super::sql`]), and replaces the database identifier with the
//! target's. A statement of any other shape, or one naming another database, is refused:
//! nothing is dropped silently, nothing is guessed.
//!
//! Order (deliberately not pg_restore's): `CREATE DATABASE` and its owner first; properties,
//! ACL and comments only after the content is restored, so that a dumped
//! `default_transaction_read_only = on`, `search_path` or connection limit cannot break the
//! restore's own sessions.

use std::collections::BTreeSet;

use super::sql::{quote_ident, split, Stmt};
use crate::error::{PgError, Result};

/// What to run, and which roles it needs.
#[derive(Debug, Default, Clone)]
pub struct DbPlan {
    /// The dump's database name (from its `CREATE DATABASE`).
    pub source: Option<String>,
    /// `CREATE DATABASE <target> …` as pg_dump wrote it, retargeted.
    pub create: Option<String>,
    /// The owner pg_dump recorded.
    pub owner: Option<String>,
    /// `ALTER DATABASE <target> OWNER TO …`.
    pub set_owner: Option<String>,
    /// Properties, ACL, comment, security label: run after the content.
    pub after: Vec<String>,
    /// Every role these statements name (owner, grantees, grantors, `ALTER ROLE … IN
    /// DATABASE`), to check before anything is written.
    pub roles: BTreeSet<String>,
}

/// Is this `pg_restore -l` line one of the database-level entries? The line is
/// `<id>; <tableoid> <oid> <desc> <namespace> <tag> <owner>`; database entries have
/// namespace `-` and, for ACL/COMMENT/SECURITY LABEL, a tag `DATABASE <name>`.
pub fn is_database_entry(line: &str) -> Option<u32> {
    let (id, rest) = line.split_once("; ")?;
    let id: u32 = id.trim().parse().ok()?;
    let mut w = rest.splitn(3, ' ');
    let (_, _, rest) = (w.next()?, w.next()?, w.next()?);
    let hit = rest.starts_with("DATABASE - ")
        || rest.starts_with("DATABASE PROPERTIES - ")
        || rest.starts_with("ACL - DATABASE ")
        || rest.starts_with("COMMENT - DATABASE ")
        || rest.starts_with("SECURITY LABEL - DATABASE ");
    hit.then_some(id)
}

fn refused(msg: String) -> PgError {
    PgError::refused(
        msg,
        "the dump's database-level SQL has a shape arsip does not know; restore without \
         --create into a database you created, or report this",
    )
}

/// Roles listed after `TO`/`FROM` in a GRANT/REVOKE, from token `i` on.
fn grantees(s: &Stmt, mut i: usize, roles: &mut BTreeSet<String>) {
    const STOP: [&str; 4] = ["with", "granted", "cascade", "restrict"];
    const PSEUDO: [&str; 4] = ["public", "current_user", "session_user", "current_role"];
    while i < s.toks.len() {
        if STOP.iter().any(|k| s.is_kw(i, k)) {
            return;
        }
        if s.is_kw(i, "group") {
            i += 1;
            continue;
        }
        let pseudo = PSEUDO.iter().any(|k| s.is_kw(i, k));
        if let (Some(r), false) = (s.ident(i), pseudo) {
            roles.insert(r);
        }
        i += 1;
    }
}

/// Build the plan from the SQL of the database-level entries, retargeted to `target`.
pub fn plan(sql: &str, target: &str) -> Result<DbPlan> {
    let stmts = split(sql).map_err(|e| refused(format!("database-level SQL of the dump: {e}")))?;
    let q = quote_ident(target);
    let mut p = DbPlan::default();
    // Token index of the database name in `s`, if `s` is a statement about a database.
    let name_at = |s: &Stmt| -> Option<usize> {
        if s.starts_with(&["CREATE", "DATABASE"]) || s.starts_with(&["ALTER", "DATABASE"]) {
            Some(2)
        } else if s.starts_with(&["COMMENT", "ON", "DATABASE"]) {
            Some(3)
        } else if s.starts_with(&["ALTER", "ROLE"]) && s.is_kw(3, "IN") && s.is_kw(4, "DATABASE") {
            Some(5)
        } else if s.starts_with(&["SECURITY", "LABEL"])
            || s.starts_with(&["GRANT"])
            || s.starts_with(&["REVOKE"])
        {
            s.find_kws("ON", "DATABASE").map(|i| i + 2)
        } else {
            None
        }
    };
    for s in &stmts {
        if s.starts_with(&["SET", "SESSION", "AUTHORIZATION"]) {
            // pg_dump brackets grants made by another grantor with these.
            if let Some(r) = s.ident(3) {
                p.roles.insert(r);
            }
            p.after.push(s.text.clone());
            continue;
        }
        if s.starts_with(&["RESET", "SESSION", "AUTHORIZATION"]) {
            p.after.push(s.text.clone());
            continue;
        }
        if s.starts_with(&["SET"]) || s.starts_with(&["SELECT", "pg_catalog"]) {
            continue; // pg_restore's session preamble
        }
        let Some(at) = name_at(s) else {
            return Err(refused(format!(
                "unexpected statement among the dump's database entries: {}",
                s.text.chars().take(120).collect::<String>()
            )));
        };
        let name = s.ident(at).ok_or_else(|| {
            refused(format!(
                "no database name where expected in: {}",
                s.text.chars().take(120).collect::<String>()
            ))
        })?;
        if s.starts_with(&["CREATE", "DATABASE"]) {
            p.source = Some(name.clone());
        }
        match &p.source {
            Some(src) if *src != name => {
                return Err(refused(format!(
                    "the dump's database entries name two databases ({src:?} and {name:?})"
                )))
            }
            None => p.source = Some(name),
            _ => {}
        }
        let text = s.replace(at, &q);
        if s.starts_with(&["CREATE", "DATABASE"]) {
            p.create = Some(text);
        } else if s.starts_with(&["ALTER", "DATABASE"]) && s.is_kw(3, "OWNER") && s.is_kw(4, "TO") {
            let owner = s
                .ident(5)
                .ok_or_else(|| refused(format!("no owner in {}", s.text)))?;
            p.roles.insert(owner.clone());
            p.owner = Some(owner);
            p.set_owner = Some(text);
        } else {
            if s.starts_with(&["ALTER", "ROLE"]) {
                if let Some(r) = s.ident(2) {
                    p.roles.insert(r);
                }
            } else if s.starts_with(&["GRANT"]) || s.starts_with(&["REVOKE"]) {
                let kw = if s.starts_with(&["GRANT"]) {
                    "TO"
                } else {
                    "FROM"
                };
                if let Some(i) = (at + 1..s.toks.len()).find(|&i| s.is_kw(i, kw)) {
                    grantees(s, i + 1, &mut p.roles);
                }
            }
            p.after.push(text);
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SQL: &str = r#"\restrict abc
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
CREATE DATABASE "my ""app""" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C';
ALTER DATABASE "my ""app""" OWNER TO "Bob Owner";
\unrestrict abc
\connect -reuse-previous=on "dbname='my \"app\"'"
COMMENT ON DATABASE "my ""app""" IS 'DATABASE "my ""app""" ; it''s';
ALTER DATABASE "my ""app""" CONNECTION LIMIT = 7;
ALTER DATABASE "my ""app""" SET work_mem TO '7MB';
ALTER ROLE "in database x" IN DATABASE "my ""app""" SET statement_timeout TO '5s';
REVOKE CONNECT,TEMPORARY ON DATABASE "my ""app""" FROM PUBLIC;
GRANT CONNECT,TEMPORARY ON DATABASE "my ""app""" TO reader, "public";
SET SESSION AUTHORIZATION "Bob Owner";
GRANT CREATE ON DATABASE "my ""app""" TO "we ird""r" WITH GRANT OPTION;
RESET SESSION AUTHORIZATION;
"#;

    #[test]
    fn retargets_every_statement_and_collects_roles() {
        let p = plan(SQL, "new; \"db\"").unwrap();
        let q = "\"new; \"\"db\"\"\"";
        assert_eq!(p.source.as_deref(), Some("my \"app\""));
        assert_eq!(
            p.create.as_deref().unwrap(),
            format!("CREATE DATABASE {q} WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C'")
        );
        assert_eq!(p.owner.as_deref(), Some("Bob Owner"));
        assert_eq!(
            p.set_owner.as_deref().unwrap(),
            format!("ALTER DATABASE {q} OWNER TO \"Bob Owner\"")
        );
        assert_eq!(p.after.len(), 9);
        // the literal inside the comment is untouched
        assert_eq!(
            p.after[0],
            format!("COMMENT ON DATABASE {q} IS 'DATABASE \"my \"\"app\"\"\" ; it''s'")
        );
        assert_eq!(
            p.after[3],
            format!("ALTER ROLE \"in database x\" IN DATABASE {q} SET statement_timeout TO '5s'")
        );
        let roles: Vec<&str> = p.roles.iter().map(String::as_str).collect();
        assert_eq!(
            roles,
            [
                "Bob Owner",
                "in database x",
                "public",
                "reader",
                "we ird\"r"
            ]
        );
    }

    #[test]
    fn unknown_statements_and_other_databases_are_refused() {
        assert!(plan("DROP DATABASE x;", "t").is_err());
        assert!(plan("CREATE DATABASE a;\nALTER DATABASE b SET x TO 1;", "t").is_err());
        assert!(plan("CREATE DATABASE a WITH OWNER = 'x;", "t").is_err());
    }

    #[test]
    fn database_entries_in_a_listing() {
        let l = "3349; 1262 16387 DATABASE - my app bob\n\
                 3350; 0 0 COMMENT - DATABASE \"my app\" bob\n\
                 3351; 0 0 ACL - DATABASE \"my app\" bob\n\
                 3352; 0 0 DATABASE PROPERTIES - my app bob\n\
                 3353; 0 0 ACL public TABLE t postgres\n\
                 3354; 0 0 ACL - SCHEMA public postgres\n\
                 3355; 0 0 COMMENT - EXTENSION plpgsql\n";
        let ids: Vec<u32> = l.lines().filter_map(is_database_entry).collect();
        assert_eq!(ids, [3349, 3350, 3351, 3352]);
    }
}
