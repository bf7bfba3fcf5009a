//! A PostgreSQL server of a test's own, which the test may stop and start
//! (the shared one of `scripts/test` must stay up for the others).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env::free_port;
use crate::temp_dir;

/// A throwaway PostgreSQL cluster on a free port.
pub struct PgCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PgCluster {
    /// Creates and starts a cluster with a database `wharf`.
    pub fn start() -> Self {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (/usr/lib/postgresql)")
            .flatten()
            .map(|entry| entry.path().join("bin"))
            .filter(|bin| bin.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL bin directory");
        let dir = temp_dir("wharf-pg");
        if is_root() {
            run("chown", &["-R", "postgres", &dir.display().to_string()]);
        }
        let cluster = PgCluster {
            bin,
            dir,
            port: free_port(),
        };
        cluster.as_postgres(&format!(
            "{} -D {} -A trust -U postgres >/dev/null",
            cluster.tool("initdb"),
            cluster.data().display()
        ));
        cluster.resume();
        cluster.as_postgres(&format!(
            "{} -h 127.0.0.1 -p {} -U postgres wharf",
            cluster.tool("createdb"),
            cluster.port
        ));
        cluster
    }

    /// The URL of the `wharf` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/wharf", self.port)
    }

    /// Stops the server, closing every connection.
    pub fn stop(&self) {
        self.as_postgres(&format!(
            "{} -D {} -m fast -w stop >/dev/null",
            self.tool("pg_ctl"),
            self.data().display()
        ));
    }

    /// Starts the server (again).
    pub fn resume(&self) {
        self.as_postgres(&format!(
            "{} -D {} -l {}/log -w -o '-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off' start >/dev/null",
            self.tool("pg_ctl"),
            self.data().display(),
            self.dir.display(),
            self.port,
            self.dir.display(),
        ));
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn as_postgres(&self, command: &str) {
        if is_root() {
            run("su", &["postgres", "-s", "/bin/sh", "-c", command]);
        } else {
            run("sh", &["-c", command]);
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.as_postgres(&format!(
            "{} -D {} -m immediate stop >/dev/null 2>&1 || true",
            self.tool("pg_ctl"),
            self.data().display()
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| out.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .current_dir(Path::new("/"))
        .status()
        .unwrap_or_else(|error| panic!("failed to run {program}: {error}"));
    assert!(status.success(), "{program} {args:?} failed: {status}");
}
