//! Pages escape what they show and hold the elements the browser test looks for.

use super::*;
use crate::journal::{Entry, Event, Facts, Outcome};
use crate::testutil::{config, t};

#[test]
fn html_is_escaped() {
    assert_eq!(esc("<script>\"'&"), "&lt;script&gt;&quot;&#39;&amp;");
}

#[test]
fn a_failed_source_comes_first_with_its_word_and_its_message_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(
        dir.path(),
        "[job.db-daily]\ntype = \"backup\"\nsource = \"db\"\nschedule = \"0 2 * * *\"\n",
    );
    let at = t("2026-12-01T02:00:00Z");
    let entries = vec![
        Entry {
            at,
            event: Event::AttemptStarted {
                job: "db-daily".into(),
                scheduled: at,
                attempt: 1,
            },
        },
        Entry {
            at,
            event: Event::AttemptFinished {
                job: "db-daily".into(),
                scheduled: at,
                attempt: 1,
                outcome: Outcome::Failed,
                transient: false,
                message: Some("pg_dump: <b>connection</b> refused".into()),
                produced: None,
                facts: Box::new(Facts::default()),
            },
        },
        Entry {
            at,
            event: Event::RunFinished {
                job: "db-daily".into(),
                scheduled: at,
                outcome: Outcome::Failed,
                peer: None,
            },
        },
    ];
    let s = State::new("d1".into(), at, &entries);
    let html = overview(&c, &s, t("2026-12-01T03:00:00Z"));
    let failed = html.find("data-test=\"source-db\"").unwrap();
    let never = html.find("data-test=\"source-files\"").unwrap();
    assert!(failed < never, "failed before never");
    assert!(html.contains(">FAILED<") && html.contains(">NEVER<"));
    let page = source(&c, &s, "db", t("2026-12-01T03:00:00Z")).unwrap();
    assert!(page.contains("&lt;b&gt;connection&lt;/b&gt;") && !page.contains("<b>connection"));
    assert!(!html.contains("<script"));
}
