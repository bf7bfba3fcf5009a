//! The token secret: configured (`auth.secret`), or generated once and kept
//! in the data directory so tokens stay valid across restarts of `wharf up`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The file under the data directory that holds the generated secret.
pub fn secret_file(data_dir: &Path) -> PathBuf {
    data_dir.join("secret")
}

/// The configured secret, else the one kept in `data_dir`, else a new one
/// written there.
pub fn load_or_create(configured: &str, data_dir: &Path) -> anyhow::Result<String> {
    if !configured.is_empty() {
        return Ok(configured.to_owned());
    }
    if let Some(kept) = load_kept(data_dir)? {
        return Ok(kept);
    }
    let secret = wharf_auth::generate_secret();
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("failed to create data directory {}", data_dir.display()))?;
    let path = secret_file(data_dir);
    write_private(&path, &secret).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(secret)
}

/// The secret kept in `data_dir`, if there is one.
pub fn load_kept(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = secret_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = text.trim().to_owned();
            anyhow::ensure!(
                secret.len() >= wharf_auth::MIN_SECRET_LEN,
                "{} holds a secret shorter than {} characters",
                path.display(),
                wharf_auth::MIN_SECRET_LEN
            );
            Ok(Some(secret))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error).with_context(|| format!("failed to read {}", path.display())),
    }
}

#[cfg(unix)]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(secret.as_bytes())?;
    file.write_all(b"\n")
}

#[cfg(not(unix))]
fn write_private(path: &Path, secret: &str) -> std::io::Result<()> {
    std::fs::write(path, format!("{secret}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_keeps_the_secret() {
        let dir = std::env::temp_dir().join(format!("wharf-secret-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create("", &dir).unwrap();
        let second = load_or_create("", &dir).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            load_or_create("configured-secret-value", &dir).unwrap(),
            "configured-secret-value"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
