//! Test support: a throwaway PostgreSQL server (Debian's `postgresql`) on
//! a loopback port, in a temporary directory, stopped when dropped. Not
//! part of lumen's API.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A PostgreSQL cluster of its own.
pub struct TempPostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    as_postgres: bool,
}

/// Whether a test that cannot run must fail (CI) instead of skipping.
pub fn require_all() -> bool {
    std::env::var("LUMEN_REQUIRE_ALL").is_ok_and(|v| v == "1")
}

fn find_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl TempPostgres {
    /// Starts one, or `None` with a loud message when PostgreSQL is not
    /// installed (a panic instead under `LUMEN_REQUIRE_ALL=1`).
    pub fn start(test: &str) -> Option<TempPostgres> {
        let Some(bin) = find_bin() else {
            let msg = format!(
                "{test}: PostgreSQL is not installed (apt-get install postgresql); \
                 the PostgreSQL half of this test is SKIPPED"
            );
            if require_all() {
                panic!("{msg} (LUMEN_REQUIRE_ALL=1)");
            }
            eprintln!("\n!!!!! {msg}\n");
            return None;
        };
        let dir = std::env::temp_dir().join(format!(
            "lumen-pg-{}-{}",
            std::process::id(),
            crate::model::random_token(6)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        // PostgreSQL refuses to run as root: run it as `postgres` then.
        let as_postgres = is_root();
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot chown {} to postgres", dir.display());
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let pg = TempPostgres {
            dir,
            bin,
            port,
            as_postgres,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "lumen",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -F -c max_connections=50",
            pg.dir.display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-o",
                &opts,
                "-l",
                pg.dir.join("log").to_str().unwrap_or_default(),
                "-w",
                "start",
            ],
        );
        Some(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(args).current_dir(&self.dir);
        let out = cmd.output().unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://lumen@127.0.0.1:{}/postgres", self.port)
    }

    /// The data directory (for looking at its log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let exe = self.bin.join("pg_ctl");
        let args = [
            "-D",
            data.to_str().unwrap_or_default(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&exe)
                .args(args)
                .output()
        } else {
            Command::new(&exe).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
