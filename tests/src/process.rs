//! The service binaries, started as real processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The path of a workspace binary built beside the test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --workspace --bins; scripts/test does)",
        path.display()
    );
    path
}

/// A service process, killed when dropped.
pub struct Service {
    name: String,
    child: Child,
}

impl Service {
    /// Starts `name` with `--config config`, logging to `log_dir/<name>.log`.
    pub fn start(name: &str, config: &Path, log_dir: &Path) -> Self {
        Self::start_as(name, name, config, log_dir, &[])
    }

    /// Starts the binary `name` as instance `label` (its log is
    /// `log_dir/<label>.log`) with extra `WHARF_…` variables.
    pub fn start_as(
        name: &str,
        label: &str,
        config: &Path,
        log_dir: &Path,
        env: &[(&str, String)],
    ) -> Self {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("{label}.log")))
            .expect("log file");
        let child = Command::new(binary(name))
            .arg("--config")
            .arg(config)
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("WHARF_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {name}: {error}"));
        Service {
            name: label.to_owned(),
            child,
        }
    }

    /// Kills the process with SIGKILL: no flush, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Asks the process to stop with SIGTERM and waits until it has.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal_stop();
        self.child.wait().expect("the process can be waited for")
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_stop(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// Its exit status once it has exited, waiting at most `patience`.
    pub fn exited_within(
        &mut self,
        patience: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + patience;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The resident memory of the process, in bytes (Linux).
    pub fn rss_bytes(&self) -> u64 {
        wharf_runtime::process::resident_bytes(Some(self.child.id()))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}
