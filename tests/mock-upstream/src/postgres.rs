//! A real PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries, a
//! cluster in a temp dir, listening on a free loopback port, trusting local connections. When the tests run as
//! root (CI, containers) it runs as the `postgres` user, since PostgreSQL refuses root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").exists());
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("PostgreSQL is missing: run scripts/setup.sh (it installs Debian's postgresql)")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

fn as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Postgres {
    pub fn start() -> Postgres {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let root = as_root();
        if root {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres", data.to_str().unwrap()])
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let mut pg = Postgres {
            port: free_port(),
            bin: bin_dir(),
            data,
            _dir: dir,
        };
        pg.run(
            "initdb",
            &[
                "-D",
                pg.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        );
        // The port was free when picked; a test running alongside may take it first.
        for _ in 0..3 {
            match pg.try_start() {
                Ok(()) => return pg,
                Err(e) if e.contains("Address already in use") => pg.port = free_port(),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no free port for PostgreSQL after three tries")
    }

    fn data(&self) -> &str {
        self.data.to_str().unwrap()
    }

    fn run(&self, program: &str, args: &[&str]) {
        if let Err(e) = self.try_run(program, args) {
            panic!("{e}");
        }
    }

    fn try_run(&self, program: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(program);
        let mut cmd = if as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd
            .args(args)
            .output()
            .map_err(|e| format!("{program}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{program} {args:?}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    pub fn start_server(&self) {
        if let Err(e) = self.try_start() {
            panic!("{e}");
        }
    }

    /// Starts the server; on failure, says why with the end of the server's log.
    fn try_start(&self) -> Result<(), String> {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.data()
        );
        let log = Path::new(self.data()).join("server.log");
        let args = [
            "-D",
            self.data(),
            "-w",
            "-l",
            log.to_str().unwrap(),
            "-o",
            &opts,
            "start",
        ];
        self.try_run("pg_ctl", &args).map_err(|e| {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\nserver.log:\n{}", tail.join("\n"))
        })
    }

    /// Stops the server at once, as a crash would.
    pub fn stop_server(&self) {
        self.run(
            "pg_ctl",
            &["-D", self.data(), "-m", "immediate", "-w", "stop"],
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.try_run(
            "pg_ctl",
            &["-D", self.data(), "-m", "immediate", "-w", "stop"],
        );
    }
}
