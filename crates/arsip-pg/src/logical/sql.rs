//! A lexer for the SQL that `pg_restore -f -` prints: statements split at top-level `;`,
//! each cut into tokens with their byte spans, so that a caller can recognise a statement by
//! its keywords and replace one identifier (a database name) without touching the rest.
//!
//! Contract: quoting is understood the way the PostgreSQL scanner understands it for what
//! pg_dump writes (standard_conforming_strings on): `'…'` literals with `''`, `E'…'` literals
//! with backslash escapes, `"…"` identifiers with `""`, `$tag$…$tag$` bodies, `--` and
//! (nested) `/* */` comments. A line that starts with `\` between statements is a psql
//! meta-command (`\connect`, `\restrict`) and is dropped. Anything unterminated is an error,
//! never a guess.

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A bare word: keyword or unquoted identifier (compared case-insensitively).
    Word,
    /// A `"…"` identifier.
    Quoted,
    /// A string literal or dollar-quoted body.
    Literal,
    /// Anything else: one punctuation character or a number.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tok {
    pub kind: Kind,
    pub start: usize,
    pub end: usize,
}

/// One statement, without its terminating `;`.
#[derive(Debug, Clone)]
pub struct Stmt {
    pub text: String,
    pub toks: Vec<Tok>,
}

impl Stmt {
    pub fn raw(&self, i: usize) -> &str {
        let t = &self.toks[i];
        &self.text[t.start..t.end]
    }

    /// Token `i` is the bare keyword `kw` (ASCII case-insensitive).
    pub fn is_kw(&self, i: usize, kw: &str) -> bool {
        self.toks
            .get(i)
            .is_some_and(|t| t.kind == Kind::Word && self.raw(i).eq_ignore_ascii_case(kw))
    }

    /// The statement starts with these keywords.
    pub fn starts_with(&self, kws: &[&str]) -> bool {
        kws.iter().enumerate().all(|(i, k)| self.is_kw(i, k))
    }

    /// Token `i` as an identifier: a bare word folded to lower case (as the server folds
    /// it), a quoted one unescaped. `None` for literals and punctuation.
    pub fn ident(&self, i: usize) -> Option<String> {
        let t = self.toks.get(i)?;
        let raw = &self.text[t.start..t.end];
        match t.kind {
            Kind::Word => Some(raw.to_lowercase()),
            Kind::Quoted => Some(raw[1..raw.len() - 1].replace("\"\"", "\"")),
            _ => None,
        }
    }

    /// The statement with token `i` replaced by `with`.
    pub fn replace(&self, i: usize, with: &str) -> String {
        let t = &self.toks[i];
        format!("{}{with}{}", &self.text[..t.start], &self.text[t.end..])
    }

    /// Index of the first token pair `a b` (keywords), if any.
    pub fn find_kws(&self, a: &str, b: &str) -> Option<usize> {
        (0..self.toks.len().saturating_sub(1)).find(|&i| self.is_kw(i, a) && self.is_kw(i + 1, b))
    }
}

/// `"name"` with embedded quotes doubled: always quoted, so keywords and odd names are safe.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || !c.is_ascii()
}

fn is_ident_cont(c: char) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == '$'
}

/// Split a script into statements.
pub fn split(script: &str) -> Result<Vec<Stmt>, String> {
    let b = script.as_bytes();
    let mut out = Vec::new();
    let mut toks: Vec<Tok> = Vec::new();
    let mut stmt_start: Option<usize> = None;
    let mut i = 0;
    let mut line_start = true;
    let unterminated = |what: &str, at: usize| {
        let line = script[..at].matches('\n').count() + 1;
        format!("unterminated {what} starting on line {line}")
    };
    while i < b.len() {
        let c = script[i..].chars().next().unwrap_or('\0');
        let len = c.len_utf8();
        if c == '\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += len;
            continue;
        }
        let at_line_start = std::mem::replace(&mut line_start, false);
        // psql meta-command between statements: the rest of the line.
        if c == '\\' && at_line_start && toks.is_empty() {
            i = script[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        if script[i..].starts_with("--") {
            i = script[i..].find('\n').map_or(b.len(), |n| i + n);
            continue;
        }
        if script[i..].starts_with("/*") {
            let mut depth = 0usize;
            let from = i;
            loop {
                if i >= b.len() {
                    return Err(unterminated("comment", from));
                }
                if script[i..].starts_with("/*") {
                    depth += 1;
                    i += 2;
                } else if script[i..].starts_with("*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += script[i..].chars().next().map_or(1, char::len_utf8);
                }
            }
            continue;
        }
        if c == ';' {
            if let Some(s) = stmt_start.take() {
                let base = s;
                out.push(Stmt {
                    text: script[s..i].to_string(),
                    toks: toks
                        .drain(..)
                        .map(|t| Tok {
                            start: t.start - base,
                            end: t.end - base,
                            ..t
                        })
                        .collect(),
                });
            }
            i += 1;
            continue;
        }
        let start = i;
        stmt_start.get_or_insert(start);
        let kind;
        if c == '\'' || ((c == 'e' || c == 'E') && b.get(i + 1) == Some(&b'\'')) {
            let escapes = c != '\'';
            i += if escapes { 2 } else { 1 };
            loop {
                match b.get(i) {
                    None => return Err(unterminated("string literal", start)),
                    Some(b'\\') if escapes => i += 2,
                    Some(b'\'') if b.get(i + 1) == Some(&b'\'') => i += 2,
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            kind = Kind::Literal;
        } else if c == '"' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(unterminated("quoted identifier", start)),
                    Some(b'"') if b.get(i + 1) == Some(&b'"') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            kind = Kind::Quoted;
        } else if c == '$' {
            // $tag$ … $tag$ (tag empty or an identifier without `$`)
            let rest = &script[i + 1..];
            let tag_len = rest
                .char_indices()
                .find(|&(_, ch)| !(ch.is_alphanumeric() || ch == '_'))
                .map_or(rest.len(), |(n, _)| n);
            if rest[tag_len..].starts_with('$')
                && !rest[..tag_len].starts_with(|ch: char| ch.is_ascii_digit())
            {
                let delim = &script[i..i + tag_len + 2];
                let body = i + delim.len();
                match script[body..].find(delim) {
                    Some(n) => i = body + n + delim.len(),
                    None => return Err(unterminated("dollar-quoted string", start)),
                }
                kind = Kind::Literal;
            } else {
                i += 1;
                kind = Kind::Other;
            }
        } else if is_ident_start(c) {
            i += len;
            while let Some(ch) = script[i..].chars().next() {
                if !is_ident_cont(ch) {
                    break;
                }
                i += ch.len_utf8();
            }
            kind = Kind::Word;
        } else {
            i += len;
            kind = Kind::Other;
        }
        toks.push(Tok {
            kind,
            start,
            end: i,
        });
    }
    if let Some(s) = stmt_start {
        return Err(format!(
            "statement without a terminating `;`: {}",
            script[s..].chars().take(80).collect::<String>()
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_quotes_comments_and_meta_commands() {
        let s = split(
            "\\restrict abc\nSET x = 0;\n-- c; c\nCOMMENT ON DATABASE \"a;\"\"b\" IS 'it''s; /* */';\n\
             /* outer /* inner; */ still; */ GRANT CONNECT ON DATABASE x TO \"r\";\n\
             \\connect -reuse-previous=on \"dbname='a;b'\"\n\
             SELECT $f$ ; $f$, E'\\'; ', $$;$$;",
        )
        .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].text, "SET x = 0");
        assert!(s[1].starts_with(&["comment", "ON", "database"]));
        assert_eq!(s[1].ident(3).unwrap(), "a;\"b");
        assert_eq!(s[1].raw(5), "'it''s; /* */'");
        assert!(s[2].starts_with(&["GRANT"]));
        assert_eq!(s[2].ident(6).unwrap(), "r");
        assert_eq!(s[3].toks.len(), 6);
        assert_eq!(
            s[1].replace(3, &quote_ident("new")),
            "COMMENT ON DATABASE \"new\" IS 'it''s; /* */'"
        );
    }

    #[test]
    fn bare_words_fold_and_unicode_names() {
        let s = split("ALTER DATABASE Tëst_1$ OWNER TO \"Ünï \"\"x\"\"\";").unwrap();
        assert_eq!(s[0].ident(2).unwrap(), "tëst_1$");
        assert_eq!(s[0].ident(5).unwrap(), "Ünï \"x\"");
    }

    #[test]
    fn unterminated_is_an_error() {
        for bad in [
            "SELECT 'x;",
            "SELECT \"x;",
            "SELECT $a$ x;",
            "SELECT /* x;",
            "SELECT 1",
        ] {
            assert!(split(bad).is_err(), "{bad}");
        }
    }
}
