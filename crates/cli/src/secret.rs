//! What `wharf up` generates once and keeps in its data directory, so it
//! stays valid across restarts: the token secret (unless `auth.secret` is
//! configured) and a development API key (unless `commander.api.keys` is).

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
    create(&secret_file(data_dir), &wharf_auth::generate_secret())
}

/// The file under the data directory that holds the development API key.
pub fn api_key_file(data_dir: &Path) -> PathBuf {
    data_dir.join("api-key")
}

/// The development API key kept in `data_dir`, or a new one written there.
pub fn load_or_create_api_key(data_dir: &Path) -> anyhow::Result<String> {
    let path = api_key_file(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Ok(_) => anyhow::bail!("{} is empty; delete it to get a new key", path.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            create(&path, &wharf_auth::generate_api_key())
        }
        Err(error) => Err(error).with_context(|| format!("failed to read {}", path.display())),
    }
}

/// Writes `value` to a new private file at `path`, creating its directory.
fn create(path: &Path, value: &str) -> anyhow::Result<String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("failed to create data directory {}", dir.display()))?;
    }
    write_private(path, value).with_context(|| format!("failed to write {}", path.display()))?;
    Ok(value.to_owned())
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

    #[test]
    fn generates_once_then_keeps_the_api_key() {
        let dir = std::env::temp_dir().join(format!("wharf-api-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = load_or_create_api_key(&dir).unwrap();
        assert!(first.starts_with("wharf_"), "{first}");
        assert_eq!(load_or_create_api_key(&dir).unwrap(), first);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(api_key_file(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "only its owner reads the key");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
