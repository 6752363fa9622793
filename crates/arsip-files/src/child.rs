//! [`ChildReader`]: a producer program's stdout as a [`Read`] that fails at its end unless the
//! program exited 0, so that a snapshot fed from it can only commit after a successful exit
//! (`backup command`, `pg_dump`, `pg_dumpall`).

use std::io::{Read, Seek, SeekFrom};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};

/// How much of the end of a failed producer's stderr its error carries.
pub const STDERR_TAIL: u64 = 4096;

/// A child's stdout that fails at EOF unless the child exited 0.
///
/// The child's stdin is `/dev/null`; its stderr goes to an unlinked temporary file, whose
/// last [`STDERR_TAIL`] bytes are put into the error when the child fails. Dropping the
/// reader before EOF kills and reaps the child (a backup that failed on the repository side
/// must not leave its producer running).
pub struct ChildReader {
    child: Child,
    out: ChildStdout,
    stderr: std::fs::File,
    what: String,
    status: Option<ExitStatus>,
}

impl ChildReader {
    /// Start `cmd` (argv passed as given, no shell). `what` names it in errors.
    pub fn spawn(mut cmd: Command, what: &str) -> std::io::Result<ChildReader> {
        let stderr = tempfile::tempfile().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot create a temporary file for {what}'s stderr: {e}"),
            )
        })?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr.try_clone()?)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run {what}: {e}")))?;
        let out = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other(format!("{what}: no stdout pipe")))?;
        // A 1 MiB pipe instead of the default 64 KiB lets the child run ahead while arsip
        // compresses, instead of stalling the whole chain (server, pg_dump, arsip) on every
        // scheduling hiccup. Best effort: 1 MiB is the default `fs.pipe-max-size`.
        #[cfg(target_os = "linux")]
        let _ = rustix::pipe::fcntl_setpipe_size(&out, 1 << 20);
        Ok(ChildReader {
            child,
            out,
            stderr,
            what: what.into(),
            status: None,
        })
    }

    /// The child's exit status, once the reader reached its end.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// The last [`STDERR_TAIL`] bytes the child wrote to stderr, lossy UTF-8, trimmed, from
    /// the first line boundary in that window when the output was longer.
    pub fn stderr_tail(&mut self) -> String {
        let len = self.stderr.seek(SeekFrom::End(0)).unwrap_or(0);
        let from = len.saturating_sub(STDERR_TAIL);
        let mut buf = Vec::new();
        if self.stderr.seek(SeekFrom::Start(from)).is_ok() {
            let _ = (&mut self.stderr).take(STDERR_TAIL).read_to_end(&mut buf);
        }
        let mut s = String::from_utf8_lossy(&buf).into_owned();
        if from > 0 {
            if let Some(nl) = s.find('\n') {
                s = format!("…{}", &s[nl + 1..]);
            }
        }
        s.trim().to_string()
    }
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(st) = self.status {
            return if st.success() {
                Ok(0)
            } else {
                Err(std::io::Error::other(format!(
                    "{} already failed ({st})",
                    self.what
                )))
            };
        }
        let n = self.out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            let st = self.child.wait()?;
            self.status = Some(st);
            if !st.success() {
                let tail = self.stderr_tail();
                let tail = if tail.is_empty() {
                    "(no output on stderr)".to_string()
                } else {
                    tail
                };
                return Err(std::io::Error::other(format!(
                    "{} failed ({st}); nothing was committed; its stderr ends: {tail}",
                    self.what
                )));
            }
        }
        Ok(n)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c").arg(script);
        c
    }

    #[test]
    fn success_reads_all_and_records_status() {
        let mut r = ChildReader::spawn(sh("printf hello; echo warn >&2"), "producer").unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(r.status().unwrap().code(), Some(0));
    }

    #[test]
    fn failure_is_an_error_at_eof_with_the_stderr_tail() {
        let mut r = ChildReader::spawn(
            sh("printf data; i=0; while [ $i -lt 2000 ]; do echo noise $i >&2; i=$((i+1)); done; echo the-reason >&2; exit 7"),
            "producer",
        )
        .unwrap();
        let mut out = Vec::new();
        let e = r.read_to_end(&mut out).unwrap_err().to_string();
        assert!(e.contains("exit status: 7"), "{e}");
        assert!(e.ends_with("the-reason"), "{e}");
        assert!(
            e.len() < STDERR_TAIL as usize + 200,
            "tail is bounded: {}",
            e.len()
        );
        assert_eq!(r.status().unwrap().code(), Some(7));
    }

    #[test]
    fn a_signal_is_a_failure() {
        let mut r = ChildReader::spawn(sh("printf x; kill -9 $$"), "producer").unwrap();
        let e = std::io::copy(&mut r, &mut std::io::sink())
            .unwrap_err()
            .to_string();
        assert!(e.contains("signal"), "{e}");
    }

    #[test]
    fn a_missing_program_names_itself() {
        let e = ChildReader::spawn(Command::new("/nonexistent/prog"), "prog")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot run prog"), "{e}");
    }
}
