//! Where secrets come from: `ARSIP_PASSWORD_FILE`, `ARSIP_PASSWORD`, or a prompt on the
//! terminal; key files from `--key-file` / `ARSIP_KEY_FILE`. Never from argv, never logged.

use std::path::Path;

use anyhow::{Context, Result};

use crate::usage;
use arsip_ops::repo::OpenWith;
use zeroize::Zeroizing;

/// Read the repository password.
pub fn password(prompt: &str, confirm: bool) -> Result<Zeroizing<Vec<u8>>> {
    from_env_or_prompt("ARSIP_PASSWORD_FILE", "ARSIP_PASSWORD", prompt, confirm)
}

/// Read a new password (for `key add` / `key passwd`).
pub fn new_password() -> Result<Zeroizing<Vec<u8>>> {
    from_env_or_prompt(
        "ARSIP_NEW_PASSWORD_FILE",
        "ARSIP_NEW_PASSWORD",
        "new password: ",
        true,
    )
}

fn from_env_or_prompt(
    file_var: &str,
    var: &str,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<Vec<u8>>> {
    if let Some(path) = std::env::var_os(file_var) {
        let raw = std::fs::read(&path).map_err(|e| {
            usage!(
                "cannot read {file_var} ({}): {e}",
                Path::new(&path).display()
            )
        })?;
        let mut s = Zeroizing::new(raw);
        while s.last() == Some(&b'\n') || s.last() == Some(&b'\r') {
            s.pop();
        }
        return non_empty(s, file_var);
    }
    if let Some(v) = std::env::var_os(var) {
        return non_empty(Zeroizing::new(v.into_encoded_bytes()), var);
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::fs::File::open("/dev/tty").is_err()
    {
        return Err(usage!(
            "no password: set {file_var} (preferred) or {var}, or run on a terminal to be prompted"
        ));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password(prompt)
            .context("reading password from the terminal")?
            .into_bytes(),
    );
    if confirm {
        let again = Zeroizing::new(rpassword::prompt_password("repeat: ")?.into_bytes());
        if *again != *p {
            return Err(usage!("the passwords do not match"));
        }
    }
    non_empty(p, var)
}

fn non_empty(p: Zeroizing<Vec<u8>>, source: &str) -> Result<Zeroizing<Vec<u8>>> {
    if p.is_empty() {
        return Err(usage!("the password from {source} is empty"));
    }
    Ok(p)
}

/// What opens the repository: the key file if one is given, else a password.
pub fn open_with(key_file: Option<&Path>) -> Result<OpenWith> {
    match key_file {
        Some(path) => {
            let raw = Zeroizing::new(
                std::fs::read(path)
                    .map_err(|e| usage!("cannot read key file {}: {e}", path.display()))?,
            );
            Ok(arsip_ops::open::credentials(
                &raw,
                &path.display().to_string(),
            )?)
        }
        None => Ok(OpenWith::Password(password(
            "repository password: ",
            false,
        )?)),
    }
}

/// A secret file reserved before the secret exists: created empty with mode 0600 (refusing
/// to overwrite anything), so that a key is never added to the repository when its file
/// cannot be written. Dropped without `write`, the empty file is removed.
pub struct SecretFile {
    path: std::path::PathBuf,
    file: Option<std::fs::File>,
}

impl SecretFile {
    pub fn reserve(path: &Path) -> Result<SecretFile> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
        Ok(SecretFile {
            path: path.to_path_buf(),
            file: Some(file),
        })
    }

    pub fn write(mut self, bytes: &[u8]) -> Result<()> {
        use std::io::Write;
        let mut f = self.file.take().expect("written once");
        f.write_all(bytes)?;
        f.sync_all()?;
        Ok(())
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
