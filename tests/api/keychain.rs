//! The real OS keychain: gnome-keyring's Secret Service on a D-Bus session of the test's own,
//! unlocked with a password on stdin. The real binary stores the Anthropic key there (CLI and
//! Settings), reads it back after a restart, forwards virtual-key requests with it, and
//! deletes it; the key never reaches the logs, the database or an API answer.

use crate::durability::{Proc, fixture, get_json, serve_with, url};
use crate::helpers::body;
use serde_json::{Value, json};
use std::io::Write;
use std::process::{Command, Output, Stdio};

const FIRST: &str = "sk-ant-KEYCHAIN-5ecret-wxyz";
const SECOND: &str = "sk-ant-SECOND-5ecret-9876";

/// A session bus with gnome-keyring on it, in a home of its own; both end with the value.
struct Keyring {
    bus: String,
    bus_pid: u32,
    home: tempfile::TempDir,
}

impl Drop for Keyring {
    /// gnome-keyring leaves when its bus goes.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.bus_pid.to_string()).status();
    }
}

fn needs(program: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is missing: run scripts/setup.sh (it installs gnome-keyring and dbus)"
    );
    Command::new(program)
}

impl Keyring {
    fn start() -> Keyring {
        let home = tempfile::tempdir().unwrap();
        for d in ["run", "data"] {
            std::fs::create_dir(home.path().join(d)).unwrap();
        }
        let out = needs("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let bus = lines.next().unwrap().to_string();
        let bus_pid = lines.next().unwrap().trim().parse().unwrap();
        let k = Keyring { bus, bus_pid, home };
        // Unlocks (creating) the login keyring with the password on stdin, then daemonises.
        let mut unlock = k
            .env(needs("gnome-keyring-daemon"))
            .args(["--unlock", "--components=secrets"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        unlock
            .stdin
            .take()
            .unwrap()
            .write_all(b"test-password")
            .unwrap();
        assert!(unlock.wait().unwrap().success());
        // Ready once it owns the Secret Service name (polled: it registers after forking).
        let owned = || {
            let o = k
                .env(needs("gdbus"))
                .args([
                    "call",
                    "--session",
                    "--dest",
                    "org.freedesktop.DBus",
                    "--object-path",
                    "/org/freedesktop/DBus",
                    "--method",
                    "org.freedesktop.DBus.NameHasOwner",
                    "org.freedesktop.secrets",
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).contains("true")
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !owned() {
            assert!(
                std::time::Instant::now() < deadline,
                "gnome-keyring did not take the Secret Service name"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        k
    }

    fn env(&self, mut cmd: Command) -> Command {
        let h = self.home.path();
        cmd.env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .env("HOME", h)
            .env("XDG_RUNTIME_DIR", h.join("run"))
            .env("XDG_DATA_HOME", h.join("data"))
            .env_remove("AGENT_BUDGET_NO_KEYCHAIN");
        cmd
    }

    /// `agent-budget key <what>`, with `stdin` piped in.
    fn key(&self, what: &str, stdin: &str) -> Output {
        let mut c = self
            .env(Command::new(env!("CARGO_BIN_EXE_agent-budget")))
            .args(["key", what])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        c.wait_with_output().unwrap()
    }

    fn serve(&self, args: &[String]) -> Proc {
        let mut cmd = self.env(Command::new(env!("CARGO_BIN_EXE_agent-budget")));
        cmd.arg("serve")
            .args(args.iter().filter(|a| *a != "--no-keychain"))
            .env("RUST_LOG", "trace");
        serve_with(cmd)
    }
}

fn said(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

async fn forward(c: &reqwest::Client, p: &Proc, key: &str) -> reqwest::Response {
    c.post(url(p.port, "/v1/messages"))
        .header("x-api-key", key)
        .json(&body("claude-haiku-4-5", 10))
        .send()
        .await
        .unwrap()
}

async fn key_view(c: &reqwest::Client, p: &Proc) -> Value {
    get_json(c, p.port, "/api/settings/upstream-key").await
}

fn last_real_key(mock: &mock_upstream::Mock) -> String {
    let seen = mock.state.seen();
    let last = seen.last().expect("the mock saw a request");
    last.headers["x-api-key"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn the_real_key_lives_in_the_os_keychain_across_restarts() {
    let ring = Keyring::start();
    let (mock, dir, args) = fixture().await;
    let c = reqwest::Client::new();

    // The CLI: nothing stored, a bad key refused and nothing stored, then the real one.
    let none = ring.key("show", "");
    assert!(
        none.status.success() && said(&none).contains("holds no Anthropic key"),
        "{}",
        said(&none)
    );
    let virtual_one = ring.key("set", "sk-ab-0123456789\n");
    assert!(!virtual_one.status.success());
    assert!(
        said(&virtual_one).contains("virtual key"),
        "{}",
        said(&virtual_one)
    );
    assert!(said(&ring.key("show", "")).contains("holds no Anthropic key"));
    let set = ring.key("set", &format!("{FIRST}\n"));
    assert!(set.status.success(), "{}", said(&set));
    assert!(said(&set).contains("…wxyz") && !said(&set).contains(FIRST));
    assert!(said(&ring.key("show", "")).contains("ending in …wxyz"));

    // The proxy starts with it and forwards a virtual key's request with it.
    let mut logs = String::new();
    let p = ring.serve(&args);
    assert_eq!(
        key_view(&c, &p).await,
        json!({"source": "keychain", "last4": "wxyz", "keychain": true})
    );
    let made: Value = c
        .post(url(p.port, "/api/budgets/default/keys"))
        .json(&json!({"name": "agent"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vkey = made["key"].as_str().unwrap().to_string();
    assert_eq!(forward(&c, &p, &vkey).await.status(), 200);
    assert_eq!(last_real_key(&mock), FIRST);

    // Settings replaces it (a malformed one changes nothing), from the next request on.
    let put = |k: &str| {
        c.put(url(p.port, "/api/settings/upstream-key"))
            .json(&json!({ "key": k }))
            .send()
    };
    let bad = put("sk-ant bad").await.unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("field 'key'"));
    assert_eq!(key_view(&c, &p).await["last4"], "wxyz");
    let replaced: Value = put(SECOND).await.unwrap().json().await.unwrap();
    assert_eq!(replaced["last4"], "9876");
    assert_eq!(forward(&c, &p, &vkey).await.status(), 200);
    assert_eq!(last_real_key(&mock), SECOND);
    logs += &p.log.lock().unwrap();
    drop(p);

    // Read back after a restart; then deleted: virtual keys are refused, saying how to fix it.
    let p = ring.serve(&args);
    assert_eq!(key_view(&c, &p).await["last4"], "9876");
    assert_eq!(forward(&c, &p, &vkey).await.status(), 200);
    assert_eq!(last_real_key(&mock), SECOND);
    let del = || c.delete(url(p.port, "/api/settings/upstream-key")).send();
    assert_eq!(del().await.unwrap().status(), 204);
    assert_eq!(
        key_view(&c, &p).await,
        json!({"source": null, "last4": null, "keychain": true})
    );
    let refused = forward(&c, &p, &vkey).await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("Settings"));
    let again = del().await.unwrap();
    assert_eq!(again.status(), 404);
    assert!(
        again
            .text()
            .await
            .unwrap()
            .contains("holds no upstream key")
    );
    logs += &p.log.lock().unwrap();
    drop(p);
    assert!(said(&ring.key("show", "")).contains("holds no Anthropic key"));
    let p = ring.serve(&args);
    assert_eq!(key_view(&c, &p).await["source"], Value::Null);
    logs += &p.log.lock().unwrap();
    drop(p);

    // Neither key in the trace logs or in any file of the data directory.
    for k in [FIRST, SECOND] {
        assert!(!logs.contains(k), "the log shows {k}");
        for f in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(f.unwrap().path()).unwrap_or_default();
            assert!(!String::from_utf8_lossy(&bytes).contains(k));
        }
    }
}

#[tokio::test]
async fn a_key_given_by_file_is_not_changed_by_settings() {
    let ring = Keyring::start();
    let (_mock, dir, mut args) = fixture().await;
    let file = dir.path().join("upstream-key");
    std::fs::write(&file, FIRST).unwrap();
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    args.extend(["--upstream-key-file".into(), file.to_str().unwrap().into()]);
    let p = ring.serve(&args);
    let c = reqwest::Client::new();
    assert_eq!(key_view(&c, &p).await["source"], "file");
    let put = c
        .put(url(p.port, "/api/settings/upstream-key"))
        .json(&json!({ "key": SECOND }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 409);
    assert!(put.text().await.unwrap().contains("--upstream-key-file"));
    assert_eq!(key_view(&c, &p).await["last4"], "wxyz");
    assert!(said(&ring.key("show", "")).contains("holds no Anthropic key"));
}
