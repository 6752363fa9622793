//! `--table` selection: the `pg_restore --use-list` that restores named tables and what hangs
//! off them, chosen from the archive's table of contents ([`select`]).
//!
//! The listing (`pg_restore -l`) names each entry `<id>; <tableoid> <oid> <desc> <schema>
//! <tag> <owner>`; index, sequence and trigger-function entries do not name their table, so
//! the schema's SQL (`pg_restore --section=pre-data|post-data -f -`) is read for those ([`PostData`]). A requested table that the
//! archive does not hold is an error naming it and the closest tables it does hold: a
//! `--table` typo must never "succeed" by restoring nothing.

use std::collections::BTreeMap;

use super::sql::{quote_ident, split, Kind, Stmt};
use crate::error::{PgError, Result};

/// (schema, name) of a relation.
type Rel = (String, String);

/// What the schema's SQL says about tables: the table of each index, the table owning each
/// sequence (serial and identity columns), and the trigger functions each table's triggers
/// call (index, sequence and function TOC entries do not name them).
#[derive(Debug, Default)]
pub struct PostData {
    index_of: BTreeMap<(String, String), (String, String)>,
    /// (schema, sequence) -> (schema, table), from `ALTER SEQUENCE … OWNED BY` and
    /// `ADD GENERATED … AS IDENTITY (SEQUENCE NAME …)`; `None` when the SQL could not be
    /// read as statements (then sequences named `<table>_…_seq` are taken, as pg_dump
    /// names those of serial columns).
    seq_of: Option<BTreeMap<Rel, Rel>>,
    /// (schema, table) -> [(function schema, function name)]
    pub trigger_fns: BTreeMap<(String, String), Vec<(String, String)>>,
}

fn unquote(s: &str) -> String {
    s.trim_matches('"').to_string()
}

fn split_qualified(s: &str) -> Option<(String, String)> {
    let (a, b) = s.split_once('.')?;
    Some((unquote(a), unquote(b)))
}

/// A qualified name from token `i` on (`a`, `a.b`, `a.b.c`), and the index after it.
fn qualified(s: &Stmt, mut i: usize) -> Option<(Vec<String>, usize)> {
    let mut parts = vec![s.ident(i)?];
    while s.toks.get(i + 1).is_some_and(|t| t.kind == Kind::Other) && s.raw(i + 1) == "." {
        parts.push(s.ident(i + 2)?);
        i += 2;
    }
    Some((parts, i + 1))
}

/// (schema, sequence) -> (schema, table) for the sequences that belong to a table.
fn sequence_owners(sql: &str) -> Result<BTreeMap<Rel, Rel>, String> {
    let mut out = BTreeMap::new();
    for s in split(sql)? {
        if s.starts_with(&["ALTER", "SEQUENCE"]) {
            // ALTER SEQUENCE s.seq OWNED BY s.table.column
            let Some((seq, _)) = qualified(&s, 2) else {
                continue;
            };
            let Some(at) = s.find_kws("OWNED", "BY") else {
                continue;
            };
            if let (Some((t, _)), [ss, sn]) = (qualified(&s, at + 2), &seq[..]) {
                if let [ts, tn, _col] = &t[..] {
                    out.insert((ss.clone(), sn.clone()), (ts.clone(), tn.clone()));
                }
            }
        } else if s.starts_with(&["ALTER", "TABLE"]) {
            // ALTER TABLE [ONLY] s.table ALTER COLUMN c ADD GENERATED … (SEQUENCE NAME s.seq …)
            let from = if s.is_kw(2, "ONLY") { 3 } else { 2 };
            let Some((t, _)) = qualified(&s, from) else {
                continue;
            };
            if s.find_kws("ADD", "GENERATED").is_none() {
                continue;
            }
            let Some(at) = s.find_kws("SEQUENCE", "NAME") else {
                continue;
            };
            if let (Some((seq, _)), [ts, tn]) = (qualified(&s, at + 2), &t[..]) {
                if let [ss, sn] = &seq[..] {
                    out.insert((ss.clone(), sn.clone()), (ts.clone(), tn.clone()));
                }
            }
        }
    }
    Ok(out)
}

/// Read the pre-data and post-data sections' SQL (`pg_restore --section=… -f -`).
pub fn schema_facts(pre: &str, post: &str) -> PostData {
    let mut pd = post_data(post);
    match sequence_owners(pre) {
        Ok(m) => pd.seq_of = Some(m),
        Err(e) => tracing::warn!(
            "reading the dump's schema for sequence ownership: {e}; taking sequences named <table>_…_seq"
        ),
    }
    pd
}

/// Indexes and triggers from the post-data section (line by line: pg_dump writes each
/// `CREATE INDEX` and `CREATE TRIGGER` on one line).
fn post_data(sql: &str) -> PostData {
    let mut pd = PostData::default();
    for line in sql.lines() {
        let l = line.trim_start();
        if let Some(rest) = l
            .strip_prefix("CREATE UNIQUE INDEX ")
            .or_else(|| l.strip_prefix("CREATE INDEX "))
        {
            let mut it = rest.split_whitespace();
            let idx = unquote(it.next().unwrap_or(""));
            let mut on = it.skip_while(|w| *w != "ON").skip(1);
            let mut tgt = on.next().unwrap_or("");
            if tgt == "ONLY" {
                tgt = on.next().unwrap_or("");
            }
            if let Some((s, t)) = split_qualified(tgt) {
                pd.index_of.insert((s.clone(), idx), (s, t));
            }
        } else if l.starts_with("CREATE TRIGGER ") || l.starts_with("CREATE CONSTRAINT TRIGGER ") {
            let words: Vec<&str> = l.split_whitespace().collect();
            let table = words
                .iter()
                .position(|w| *w == "ON")
                .and_then(|i| words.get(i + 1))
                .and_then(|t| split_qualified(t));
            let func = words
                .iter()
                .position(|w| *w == "FUNCTION" || *w == "PROCEDURE")
                .and_then(|i| words.get(i + 1))
                .and_then(|f| split_qualified(f.split('(').next().unwrap_or("")));
            if let (Some(t), Some(f)) = (table, func) {
                pd.trigger_fns.entry(t).or_default().push(f);
            }
        }
    }
    pd
}

pub fn parse_tables(tables: &[String]) -> Result<Vec<(String, String)>> {
    tables
        .iter()
        .map(|t| match t.split_once('.') {
            Some((s, n)) if !s.is_empty() && !n.is_empty() => Ok((s.to_string(), n.to_string())),
            _ => Err(PgError::Usage(format!(
                "--table {t:?} is not SCHEMA.TABLE (write the schema too, e.g. --table public.vehicles)"
            ))),
        })
        .collect()
}

/// The part of a listing line after `<id>; <tableoid> <oid> `.
fn entry(line: &str) -> Option<&str> {
    if line.starts_with(';') {
        return None;
    }
    let (_, rest) = line.split_once("; ")?;
    let mut w = rest.splitn(3, ' ');
    w.next()?;
    w.next()?;
    w.next()
}

/// `rest` is `<desc> <schema> <tag> <owner>` for this desc, schema and tag (the owner is the
/// last word).
fn is(rest: &str, desc: &str, schema: &str, tag: &str) -> bool {
    rest.strip_prefix(desc)
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(schema))
        .and_then(|r| r.strip_prefix(' '))
        .and_then(|r| r.strip_prefix(tag))
        .and_then(|r| r.strip_prefix(' '))
        .is_some_and(|owner| !owner.is_empty() && !owner.contains(' '))
}

/// The tables (`TABLE` entries) of a listing, as (schema, table), for near-match hints.
/// Names with spaces are split at the first space after the schema: hints only.
pub fn tables_in(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(entry)
        .filter_map(|r| r.strip_prefix("TABLE "))
        .filter_map(|r| {
            let (st, _owner) = r.rsplit_once(' ')?;
            let (s, t) = st.split_once(' ')?;
            Some((s.to_string(), t.to_string()))
        })
        .collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Tables of the archive close to `schema.table`: the same name in another schema, a
/// case-insensitive match, or a name within a third of its length in edits.
pub fn near(all: &[(String, String)], schema: &str, table: &str) -> Vec<String> {
    let want = format!("{schema}.{table}").to_lowercase();
    let mut scored: Vec<(usize, String)> = all
        .iter()
        .filter_map(|(s, t)| {
            let name = format!("{s}.{t}");
            let d = edit_distance(&want, &name.to_lowercase());
            let close = t == table || d <= (want.chars().count() / 3).max(2);
            close.then_some((d, name))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(5).map(|(_, n)| n).collect()
}

/// Refuse tables the listing does not hold, naming them and their near matches.
pub fn check_present(listing: &str, want: &[(String, String)]) -> Result<()> {
    let entries: Vec<&str> = listing.lines().filter_map(entry).collect();
    let all = tables_in(listing);
    let mut missing = Vec::new();
    for (s, t) in want {
        if !entries.iter().any(|r| is(r, "TABLE", s, t)) {
            let n = near(&all, s, t);
            missing.push(if n.is_empty() {
                format!("{s}.{t}")
            } else {
                format!("{s}.{t} (did you mean {}?)", n.join(", "))
            });
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(PgError::refused(
        format!(
            "the dump holds no table {}; nothing was restored",
            missing.join("; no table ")
        ),
        "`pg_restore -l` of the dump lists its tables; --table takes SCHEMA.TABLE as stored \
         (case-sensitive, unquoted)",
    ))
}

/// The two spellings a tag can give a name: as is, or quoted (pg_dump's `fmtId` quotes names
/// that are not lower-case identifiers, and keywords).
fn spellings(name: &str) -> [String; 2] {
    [name.to_string(), quote_ident(name)]
}

/// The pg_restore list selecting `want` (SCHEMA.TABLE) and everything that hangs off them:
/// table definitions, data, sequences of their serial columns, defaults, constraints,
/// triggers, rules, policies, indexes, the GRANTs (ACL entries) and comments of the tables,
/// their columns and those sequences, and the trigger functions in `missing_fns` (those the
/// target database does not have yet).
pub fn table_list(
    listing: &str,
    want: &[(String, String)],
    pd: &PostData,
    missing_fns: &[(String, String)],
) -> String {
    let lines: Vec<(&str, &str)> = listing
        .lines()
        .filter_map(|l| Some((l, entry(l)?)))
        .collect();
    let mut keep = vec![false; lines.len()];
    // (schema, sequence) of selected sequences, for their ACL entries.
    let mut seqs: Vec<(String, String)> = Vec::new();
    for (i, (_, rest)) in lines.iter().enumerate() {
        let words: Vec<&str> = rest.split_whitespace().collect();
        let is_fn = words.len() >= 4
            && words[0] == "FUNCTION"
            && missing_fns
                .iter()
                .any(|(s, f)| words[1] == s && words[2].starts_with(&format!("{f}(")));
        let hit = want.iter().find(|(s, t)| entry_matches(&words, s, t, pd));
        if let Some((s, _)) = hit {
            if words[0] == "SEQUENCE" && !matches!(words[1], "SET" | "OWNED") {
                seqs.push((s.clone(), words[2..words.len() - 1].join(" ")));
            }
        }
        keep[i] = is_fn || hit.is_some() || want.iter().any(|(s, t)| is(rest, "TABLE", s, t));
    }
    for (i, (_, rest)) in lines.iter().enumerate() {
        for desc in ["ACL", "COMMENT"] {
            let Some(r) = rest.strip_prefix(desc).and_then(|r| r.strip_prefix(' ')) else {
                continue;
            };
            let object_of = |s: &str, kind: &str, name: &str, column: bool| {
                spellings(name).iter().any(|n| {
                    let head = format!("{s} {kind} {n}");
                    r.strip_prefix(&head).is_some_and(|tail| {
                        if column {
                            tail.starts_with('.')
                        } else {
                            tail.starts_with(' ')
                        }
                    })
                })
            };
            if want
                .iter()
                .any(|(s, t)| object_of(s, "TABLE", t, false) || object_of(s, "COLUMN", t, true))
                || seqs.iter().any(|(s, q)| object_of(s, "SEQUENCE", q, false))
            {
                keep[i] = true;
            }
        }
    }
    let mut out = String::new();
    for ((line, _), k) in lines.iter().zip(keep) {
        if k {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn entry_matches(words: &[&str], schema: &str, table: &str, pd: &PostData) -> bool {
    const KINDS: [&[&str]; 12] = [
        &["TABLE", "DATA"],
        &["SEQUENCE", "OWNED", "BY"],
        &["SEQUENCE", "SET"],
        &["SEQUENCE"],
        &["FK", "CONSTRAINT"],
        &["TABLE"],
        &["CONSTRAINT"],
        &["TRIGGER"],
        &["RULE"],
        &["POLICY"],
        &["INDEX"],
        &["DEFAULT"],
    ];
    for k in KINDS {
        if words.len() > k.len() + 1 && words[..k.len()] == *k {
            let s = words[k.len()];
            let tag = words[k.len() + 1..words.len() - 1].join(" ");
            if s != schema || tag.is_empty() {
                return false;
            }
            return match k {
                ["TABLE"] | ["TABLE", "DATA"] => tag == table,
                ["SEQUENCE"] | ["SEQUENCE", "SET"] | ["SEQUENCE", "OWNED", "BY"] => {
                    match &pd.seq_of {
                        Some(m) => m
                            .get(&(schema.to_string(), tag))
                            .is_some_and(|(ts, tn)| ts == schema && tn == table),
                        None => tag.starts_with(&format!("{table}_")) && tag.ends_with("_seq"),
                    }
                }
                ["INDEX"] => pd
                    .index_of
                    .get(&(schema.to_string(), tag))
                    .is_some_and(|(_, t)| t == table),
                // constraints, triggers, rules, policies, defaults: tag is "<table> <name>"
                _ => tag.starts_with(&format!("{table} ")),
            };
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = "\
;
; Archive created at 2026-12-01 21:30:44 UTC
215; 1259 16389 TABLE public t postgres
3353; 0 0 ACL public TABLE t postgres
3354; 0 0 ACL public COLUMN t.v postgres
214; 1259 16388 SEQUENCE public t_id_seq postgres
3355; 0 0 SEQUENCE OWNED BY public t_id_seq postgres
3356; 0 0 ACL public SEQUENCE t_id_seq postgres
3197; 2604 16392 DEFAULT public t id postgres
3343; 0 16389 TABLE DATA public t postgres
3357; 0 0 SEQUENCE SET public t_id_seq postgres
3199; 2606 16396 CONSTRAINT public t t_pkey postgres
216; 1259 16390 TABLE public tt postgres
3358; 0 0 ACL public TABLE tt postgres
3359; 0 0 ACL public COLUMN tt.v postgres
217; 1259 16391 TABLE public Big Name postgres
3360; 0 0 ACL public TABLE \"Big Name\" postgres
3361; 0 0 COMMENT public COLUMN \"Big Name\".x postgres
218; 1259 16392 TABLE other t postgres
";

    fn ids(list: &str) -> Vec<u32> {
        list.lines()
            .map(|l| l.split(';').next().unwrap().parse().unwrap())
            .collect()
    }

    #[test]
    fn acl_and_comment_entries_follow_their_table() {
        let pd = PostData::default();
        let l = table_list(LISTING, &[("public".into(), "t".into())], &pd, &[]);
        assert_eq!(
            ids(&l),
            [215, 3353, 3354, 214, 3355, 3356, 3197, 3343, 3357, 3199]
        );
        let l = table_list(LISTING, &[("public".into(), "Big Name".into())], &pd, &[]);
        assert_eq!(ids(&l), [217, 3360, 3361]);
    }

    const PRE: &str = r#"\restrict x
CREATE TABLE public."Id T" (id integer NOT NULL);
ALTER TABLE public."Id T" ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME public."Id T_id_seq"
    START WITH 1
);
CREATE FUNCTION public.f() RETURNS void LANGUAGE plpgsql AS $_$
BEGIN EXECUTE 'ALTER SEQUENCE public.x OWNED BY public.t.id;'; END $_$;
CREATE SEQUENCE public.t_id_seq AS integer START WITH 1;
ALTER SEQUENCE public.t_id_seq OWNED BY public.t.id;
ALTER SEQUENCE public.t_x_seq OWNED BY public.tt.x;
ALTER SEQUENCE public.t_archive_id_seq OWNED BY public.t_archive.id;
ALTER TABLE ONLY public.t ALTER COLUMN id SET DEFAULT nextval('public.t_id_seq'::regclass);
"#;

    #[test]
    fn sequences_follow_their_owning_table() {
        let pd = schema_facts(PRE, "");
        let m = pd.seq_of.as_ref().unwrap();
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(
            m[&("public".to_string(), "Id T_id_seq".to_string())],
            ("public".to_string(), "Id T".to_string())
        );
        let listing = format!(
            "{LISTING}219; 1259 16438 SEQUENCE public t_x_seq postgres\n\
             220; 1259 16439 SEQUENCE public t_archive_id_seq postgres\n\
             221; 0 0 SEQUENCE SET public t_archive_id_seq postgres\n"
        );
        // t_x_seq and t_archive_id_seq look like t's by name but belong to tt and t_archive
        let l = table_list(&listing, &[("public".into(), "t".into())], &pd, &[]);
        assert_eq!(
            ids(&l),
            [215, 3353, 3354, 214, 3355, 3356, 3197, 3343, 3357, 3199]
        );
        let l = table_list(&listing, &[("public".into(), "tt".into())], &pd, &[]);
        assert_eq!(ids(&l), [216, 3358, 3359, 219]);
        // unreadable SQL: the naming rule
        let pd = schema_facts("SELECT 'unterminated;", "");
        assert!(pd.seq_of.is_none());
    }

    #[test]
    fn unknown_tables_are_named_with_near_matches() {
        assert!(check_present(LISTING, &[("public".into(), "t".into())]).is_ok());
        assert!(check_present(LISTING, &[("public".into(), "Big Name".into())]).is_ok());
        let e = check_present(
            LISTING,
            &[
                ("public".into(), "t".into()),
                ("public".into(), "tx".into()),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no table public.tx (did you mean public.t"),
            "{e}"
        );
        let e = check_present(LISTING, &[("nope".into(), "t".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("other.t") && e.contains("public.t"), "{e}");
        let e = check_present(LISTING, &[("public".into(), "zzzzzzzz".into())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("no table public.zzzzzzzz;"), "{e}");
    }
}
