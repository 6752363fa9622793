//! The recovery target: what the user asked recovery to stop at, parsed and validated before
//! anything else happens. Unparsable input is a usage error ([`PgError::Usage`], exit 2).
//!
//! Times are accepted in the forms PostgreSQL accepts for `recovery_target_time` and psql
//! prints: `2026-12-01 19:55:12.123456+00`, `… +00:00`, `…+0700`, `… UTC`, ISO 8601 with `T`
//! and `Z`, IANA zone names (`2026-12-01 19:55:12 Asia/Jakarta`, or jiff's
//! `2026-12-01T19:55:12[Asia/Jakarta]`). A time without a zone is read in the zone the caller
//! passes (`--timezone` or `TZ`), and the plan says which zone it used; without one it is
//! refused, because PostgreSQL would read it in the *server's* `timezone` setting, which the
//! user did not say. The time is written to `recovery_target_time` in UTC.

use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};
use jiff::Timestamp;

use crate::control::parse_lsn;
use crate::error::{PgError, Result};

/// A time target, with the zone it was read in when the input named none.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TimeTarget {
    pub at: Timestamp,
    /// What the user typed.
    pub input: String,
    /// Set when the input had no zone: the zone it was read in and where that came from.
    pub assumed_zone: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Target {
    /// Replay all available WAL.
    #[default]
    End,
    Time(TimeTarget),
    Lsn(u64),
    Xid(u64),
    Name(String),
    Immediate,
}

/// What recovery does when it reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetAction {
    #[default]
    Promote,
    Pause,
    Shutdown,
}

impl TargetAction {
    pub fn parse(s: &str) -> Result<TargetAction> {
        match s {
            "promote" => Ok(TargetAction::Promote),
            "pause" => Ok(TargetAction::Pause),
            "shutdown" => Ok(TargetAction::Shutdown),
            _ => Err(PgError::usage(
                format!("--target-action {s:?}"),
                "use promote, pause or shutdown",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TargetAction::Promote => "promote",
            TargetAction::Pause => "pause",
            TargetAction::Shutdown => "shutdown",
        }
    }
}

/// Why a time did not parse.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeError {
    /// A valid date and time without a zone, and no default zone was given.
    NoZone,
    Invalid(String),
}

fn offset_of(s: &str) -> Option<Offset> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || !matches!(digits.len(), 1 | 2 | 4 | 6)
    {
        return None;
    }
    // with colons, each field is two digits (`+7:00` is not an offset PostgreSQL prints)
    if rest.contains(':') && rest.split(':').any(|p| p.len() != 2) {
        return None;
    }
    let (h, m, sec) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok()?, 0, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?, 0),
        _ => (
            digits[..2].parse().ok()?,
            digits[2..4].parse().ok()?,
            digits[4..].parse().ok()?,
        ),
    };
    if h > 15 || m > 59 || sec > 59 {
        return None;
    }
    Offset::from_seconds(sign * (h * 3600 + m * 60 + sec)).ok()
}

fn zone_named(name: &str) -> std::result::Result<TimeZone, TimeError> {
    match name {
        "UTC" | "utc" | "GMT" | "gmt" | "Z" | "z" | "Etc/UTC" | "UCT" | "Zulu" => Ok(TimeZone::UTC),
        _ => TimeZone::get(name).map_err(|e| {
            TimeError::Invalid(format!(
                "unknown time zone {name:?} ({e}); use an IANA name such as Asia/Jakarta, UTC, or an offset such as +07:00"
            ))
        }),
    }
}

/// The zone named by `--timezone` or `TZ` (`:Asia/Jakarta` as glibc allows, or a name).
pub fn default_zone(spec: &str) -> std::result::Result<TimeZone, TimeError> {
    let s = spec.trim().trim_start_matches(':');
    if let Some(o) = offset_of(s) {
        return Ok(TimeZone::fixed(o));
    }
    zone_named(s)
}

fn civil(s: &str) -> Option<DateTime> {
    let s = s.trim();
    if s.len() < 10 {
        return None;
    }
    let (date, rest) = s.split_at(10);
    let date: jiff::civil::Date = date.parse().ok()?;
    let rest = rest.trim_start_matches(['T', 't', ' ']);
    if rest.is_empty() {
        return Some(date.to_datetime(jiff::civil::Time::midnight()));
    }
    let time: jiff::civil::Time = rest.parse().ok()?;
    Some(date.to_datetime(time))
}

/// Split `s` into its date-time and zone parts: a trailing zone name or offset after a
/// space, a `Z`, an offset glued to the time, or a `[Zone]` suffix.
fn split_zone(s: &str) -> (&str, Option<&str>) {
    let s = s.trim();
    if let Some(i) = s.rfind('[').filter(|_| s.ends_with(']')) {
        return (&s[..i], Some(&s[i + 1..s.len() - 1]));
    }
    if let Some((head, last)) = s.rsplit_once(char::is_whitespace) {
        let first = last.chars().next().unwrap_or(' ');
        // `2026-12-01 19:55` has a space too: a zone starts with a letter, + or -
        if (first.is_ascii_alphabetic() || first == '+' || first == '-') && head.len() > 10 {
            return (head.trim_end(), Some(last));
        }
    }
    if let Some(h) = s.strip_suffix(['Z', 'z']) {
        return (h, Some("Z"));
    }
    // an offset glued to the time: the last + or - after the date's own dashes
    if let Some(i) = s.rfind(['+', '-']).filter(|&i| i > 10) {
        return (&s[..i], Some(&s[i..]));
    }
    (s, None)
}

/// Parse a target time. `zone` is the default zone for input without one.
pub fn parse_time_in(
    s: &str,
    zone: Option<&TimeZone>,
) -> std::result::Result<(Timestamp, bool), TimeError> {
    let invalid = || {
        TimeError::Invalid(format!(
            "{s:?} is not a date and time (YYYY-MM-DD HH:MM:SS[.ffffff] with an optional zone)"
        ))
    };
    let (dt, z) = split_zone(s);
    let dt = civil(dt).ok_or_else(invalid)?;
    let (tz, assumed) = match z {
        Some(z) => match offset_of(z) {
            Some(o) => (TimeZone::fixed(o), false),
            None if z.starts_with(['+', '-']) => return Err(invalid()),
            None => (zone_named(z)?, false),
        },
        None => (zone.cloned().ok_or(TimeError::NoZone)?, true),
    };
    // PostgreSQL's rule (its manual, "Handling of Invalid or Ambiguous Timestamps"): a time
    // repeated when clocks go back takes the offset after the transition, a time skipped
    // when they go forward the offset before it; jiff's `later` is exactly that.
    let zoned = tz
        .to_ambiguous_zoned(dt)
        .later()
        .map_err(|e| TimeError::Invalid(format!("{s:?}: {e}")))?;
    Ok((zoned.timestamp(), assumed))
}

/// Parse a target time that must carry its zone (facts written by PostgreSQL do).
pub fn parse_time(s: &str) -> Option<Timestamp> {
    parse_time_in(s, None).ok().map(|(t, _)| t)
}

/// Parse `--target-time` with the default zone given by `--timezone` or `TZ`.
pub fn parse_target_time(s: &str, zone_spec: Option<&str>) -> Result<TimeTarget> {
    let zone = match zone_spec.filter(|z| !z.trim().is_empty()) {
        Some(spec) => Some(default_zone(spec).map_err(|e| match e {
            TimeError::Invalid(m) => PgError::usage(
                format!("--timezone/TZ {spec:?}: {m}"),
                "use an IANA zone name such as Asia/Jakarta, or UTC",
            ),
            TimeError::NoZone => unreachable!(),
        })?),
        None => None,
    };
    match parse_time_in(s, zone.as_ref()) {
        Ok((at, assumed)) => Ok(TimeTarget {
            at,
            input: s.to_string(),
            assumed_zone: assumed.then(|| {
                format!(
                    "{} (from --timezone or TZ)",
                    zone_spec.unwrap_or_default().trim().trim_start_matches(':')
                )
            }),
        }),
        Err(TimeError::NoZone) => Err(PgError::usage(
            format!("--target-time {s:?} has no time zone"),
            "add one (2026-03-01 10:31:00+07, … Asia/Jakarta, … UTC), or say which zone it is in \
             with --timezone ZONE or TZ=ZONE (the server would otherwise read it in its own \
             timezone setting)",
        )),
        Err(TimeError::Invalid(m)) => Err(PgError::usage(
            format!("--target-time: {m}"),
            "e.g. 2026-03-01 10:31:00+07, 2026-03-01T03:31:00Z or 2026-03-01 10:31:00 Asia/Jakarta",
        )),
    }
}

/// A transaction id as `recovery_target_xid` takes it: a decimal number, optionally with its
/// epoch (what `txid_current()` returns).
pub fn parse_xid(s: &str) -> Result<u64> {
    let t = s.trim();
    match t.parse::<u64>() {
        Ok(x) if x >= 3 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(x),
        _ => Err(PgError::usage(
            format!("--target-xid {s:?} is not a transaction id"),
            "a decimal number of at least 3, as txid_current() or pg_current_xact_id() returns it",
        )),
    }
}

/// The raw target options, as the command line gives them.
#[derive(Debug, Clone, Default)]
pub struct TargetArgs<'a> {
    pub time: Option<&'a str>,
    pub lsn: Option<&'a str>,
    pub xid: Option<&'a str>,
    pub name: Option<&'a str>,
    pub target: Option<&'a str>,
    /// Zone for a time without one (`--timezone`, else `TZ`).
    pub timezone: Option<&'a str>,
}

impl Target {
    pub fn parse(a: &TargetArgs<'_>) -> Result<Target> {
        let n = [
            a.time.is_some(),
            a.lsn.is_some(),
            a.xid.is_some(),
            a.name.is_some(),
            a.target.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if n > 1 {
            return Err(PgError::usage(
                "give at most one recovery target",
                "choose one of --target-time, --target-lsn, --target-xid, --target-name, --target immediate",
            ));
        }
        Ok(if let Some(t) = a.time {
            Target::Time(parse_target_time(t, a.timezone)?)
        } else if let Some(l) = a.lsn {
            Target::Lsn(parse_lsn(l).ok_or_else(|| {
                PgError::usage(
                    format!("--target-lsn {l:?} is not an LSN"),
                    "two hexadecimal numbers with a slash, e.g. 0/3000060",
                )
            })?)
        } else if let Some(x) = a.xid {
            Target::Xid(parse_xid(x)?)
        } else if let Some(n) = a.name {
            if n.is_empty() || n.len() >= 64 {
                return Err(PgError::usage(
                    format!("--target-name {n:?}"),
                    "a restore point name of 1 to 63 bytes, as given to pg_create_restore_point",
                ));
            }
            Target::Name(n.into())
        } else if let Some(t) = a.target {
            if t != "immediate" {
                return Err(PgError::usage(
                    format!("--target {t:?} is not supported"),
                    "the only value is `immediate`",
                ));
            }
            Target::Immediate
        } else {
            Target::End
        })
    }

    /// Compatibility with the old argument list (no default zone).
    pub fn from_args(
        time: Option<&str>,
        lsn: Option<&str>,
        xid: Option<&str>,
        name: Option<&str>,
        target: Option<&str>,
    ) -> Result<Target> {
        Target::parse(&TargetArgs {
            time,
            lsn,
            xid,
            name,
            target,
            timezone: None,
        })
    }

    /// For messages and the plan.
    pub fn describe(&self) -> String {
        match self {
            Target::End => "the end of the archived WAL".into(),
            Target::Time(t) => match &t.assumed_zone {
                Some(z) => format!("time {} (read in {z}; {} UTC)", t.input, t.at),
                None => format!("time {} ({} UTC)", t.input, t.at),
            },
            Target::Lsn(l) => format!("LSN {}", crate::control::format_lsn(*l)),
            Target::Xid(x) => format!("transaction {x}"),
            Target::Name(n) => format!("restore point {n:?}"),
            Target::Immediate => "the end of the backup (immediate)".into(),
        }
    }

    /// The `recovery_target*` line for postgresql.auto.conf, if any.
    pub fn conf_line(&self) -> Option<String> {
        let q = crate::restore::recovery_conf::conf_quote;
        Some(match self {
            Target::End => return None,
            Target::Time(t) => format!(
                "recovery_target_time = {}",
                q(&t.at.strftime("%Y-%m-%d %H:%M:%S%.f+00").to_string())
            ),
            Target::Lsn(l) => format!(
                "recovery_target_lsn = {}",
                q(&crate::control::format_lsn(*l))
            ),
            Target::Xid(x) => format!("recovery_target_xid = {}", q(&x.to_string())),
            Target::Name(n) => format!("recovery_target_name = {}", q(n)),
            Target::Immediate => "recovery_target = 'immediate'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn time_forms() {
        let jakarta = TimeZone::get("Asia/Jakarta").expect("the tz database is on this machine");
        let want = utc("2026-12-01T19:55:12.123456Z");
        let whole = utc("2026-12-01T19:55:12Z");
        // (input, default zone?, expected)
        let table: &[(&str, bool, Timestamp)] = &[
            ("2026-12-01 19:55:12.123456+00", false, want),
            ("2026-12-01 19:55:12.123456+00:00", false, want),
            ("2026-12-01 19:55:12.123456 +00:00", false, want),
            ("2026-12-01 19:55:12.123456+0000", false, want),
            ("2026-12-01 19:55:12.123456 UTC", false, want),
            ("2026-12-01 19:55:12.123456 GMT", false, want),
            ("2026-12-01T19:55:12.123456Z", false, want),
            ("2026-12-01t19:55:12.123456z", false, want),
            ("2026-12-01T19:55:12.123456+00:00", false, want),
            ("2026-12-02 02:55:12.123456+07", false, want),
            ("2026-12-02T02:55:12.123456+07:00", false, want),
            ("2026-12-02 02:55:12.123456 Asia/Jakarta", false, want),
            ("2026-12-02T02:55:12.123456[Asia/Jakarta]", false, want),
            ("2026-12-01 14:55:12.123456-05", false, want),
            ("2026-12-01 14:55:12.123456 America/New_York", false, want),
            ("2026-12-02 01:25:12.123456+05:30", false, want),
            ("  2026-12-01 19:55:12.123456+00  ", false, want),
            ("2026-12-01 19:55:12+00", false, whole),
            // no zone: read in the default zone
            ("2026-12-02 02:55:12.123456", true, want),
            ("2026-12-02T02:55:12", true, whole),
            ("2026-12-02", true, utc("2026-12-01T17:00:00Z")),
            // as PostgreSQL reads them: a repeated hour (clocks going back) in standard time,
            // a skipped hour (clocks going forward) with the offset before the change
            (
                "2026-11-01 01:30:00 America/New_York",
                false,
                utc("2026-11-01T06:30:00Z"),
            ),
            (
                "2026-03-08 02:30:00 America/New_York",
                false,
                utc("2026-03-08T07:30:00Z"),
            ),
        ];
        for (input, with_default, expected) in table {
            let zone = with_default.then_some(&jakarta);
            let got = parse_time_in(input, zone);
            assert_eq!(
                got.as_ref().map(|(t, _)| *t),
                Ok(*expected),
                "{input:?} -> {got:?}"
            );
            assert_eq!(got.unwrap().1, *with_default, "{input:?}");
        }
        // refused
        assert_eq!(
            parse_time_in("2026-12-01 19:55:12", None),
            Err(TimeError::NoZone)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01 00:00:00+00",
            "2026-12-01 25:00:00+00",
            "2026-12-01 19:55:12 Mars/Olympus",
            "2026-12-01 19:55:12+7:0",
            "2026-12-01 19:55:12+99",
            "12345",
            "2026-12-01 19:55:12 WIB",
        ] {
            assert!(
                matches!(
                    parse_time_in(bad, Some(&jakarta)),
                    Err(TimeError::Invalid(_))
                ),
                "{bad:?} accepted"
            );
        }
        // what PostgreSQL itself writes into facts
        assert_eq!(parse_time("2026-12-01 19:55:12.123456+00"), Some(want));
    }

    #[test]
    fn default_zone_from_tz_and_flags() {
        for z in ["Asia/Jakarta", ":Asia/Jakarta", "UTC", "+07:00"] {
            assert!(default_zone(z).is_ok(), "{z}");
        }
        assert!(default_zone("Nowhere/Atlantis").is_err());
        let t = parse_target_time("2026-12-02 02:55:12", Some("Asia/Jakarta")).unwrap();
        assert_eq!(t.at, utc("2026-12-01T19:55:12Z"));
        assert!(t.assumed_zone.unwrap().contains("Asia/Jakarta"));
        assert!(matches!(
            parse_target_time("2026-12-02 02:55:12", None),
            Err(PgError::Invalid { .. })
        ));
        let t = parse_target_time("2026-12-02 02:55:12+07", Some("UTC")).unwrap();
        assert!(t.assumed_zone.is_none());
    }

    #[test]
    fn xids_lsns_names() {
        assert_eq!(parse_xid("747").unwrap(), 747);
        assert_eq!(parse_xid("4294968043").unwrap(), 4294968043);
        for bad in ["abc", "-5", "0x10", "", "1.5", "2", "18446744073709551616"] {
            assert!(
                matches!(parse_xid(bad), Err(PgError::Invalid { .. })),
                "{bad}"
            );
        }
        let t = |lsn| {
            Target::parse(&TargetArgs {
                lsn: Some(lsn),
                ..Default::default()
            })
        };
        assert_eq!(t("0/3000060").unwrap(), Target::Lsn(0x3000060));
        assert!(matches!(t("12345"), Err(PgError::Invalid { .. })));
        assert!(matches!(
            Target::parse(&TargetArgs {
                name: Some(&"x".repeat(64)),
                ..Default::default()
            }),
            Err(PgError::Invalid { .. })
        ));
        assert!(matches!(
            Target::parse(&TargetArgs {
                lsn: Some("0/1"),
                xid: Some("5"),
                ..Default::default()
            }),
            Err(PgError::Invalid { .. })
        ));
    }
}
