//! The `agent-budget` command line: `agent-budget serve`.

use agent_budget::RunningServer;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// mimalloc: the proxy allocates many small, short-lived buffers per request; glibc's malloc
/// took ~15 % of the CPU under load (docs/PERFORMANCE.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "agent-budget",
    version,
    about = "Budget-enforcing proxy for the Anthropic Messages API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy, REST API and dashboard without a GUI.
    Serve(Box<agent_budget::cli::ServeArgs>),
    /// Keep the real Anthropic API key in the OS keychain (virtual keys are forwarded with it).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Open the dashboard of a running agent-budget in the browser, signed in (a one-time link).
    Dashboard(Dashboard),
    /// Set Claude Code up to sign in to agent-budget.
    #[command(subcommand, name = "claude-code")]
    ClaudeCode(ClaudeCodeCommand),
}

#[derive(Subcommand)]
enum ClaudeCodeCommand {
    /// Point Claude Code's user settings at this gateway; then run /login in Claude Code.
    Setup(Setup),
}

#[derive(clap::Args)]
struct Setup {
    /// The budget the sign-in is offered for (the dashboard still asks).
    #[arg(long)]
    budget: Option<String>,
    /// Replace another gateway the settings already name.
    #[arg(long)]
    force: bool,
    /// The server's address as Claude Code reaches it.
    #[arg(long, env = "AGENT_BUDGET_HOST", default_value = "localhost")]
    host: String,
    #[arg(long, env = "AGENT_BUDGET_PORT", default_value_t = agent_budget::config::DEFAULT_PORT)]
    port: u16,
    /// Claude Code's settings file (default: ~/.claude/settings.json).
    #[arg(long)]
    settings: Option<PathBuf>,
}

#[derive(clap::Args)]
struct Dashboard {
    /// The running server's address.
    #[arg(long, env = "AGENT_BUDGET_HOST", default_value = "127.0.0.1")]
    host: String,
    /// The running server's port.
    #[arg(long, env = "AGENT_BUDGET_PORT", default_value_t = agent_budget::config::DEFAULT_PORT)]
    port: u16,
    /// Its data directory, where the admin token is (default: the platform's app data dir).
    #[arg(long, env = "AGENT_BUDGET_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Its admin token, if it was started with one.
    #[arg(long, env = "AGENT_BUDGET_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Only print the link; do not open a browser.
    #[arg(long)]
    no_browser: bool,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Store the key read from standard input: `agent-budget key set < key.txt`, or paste it.
    Set,
    /// Say whether the keychain holds a key, by its last four characters.
    Show,
    /// Remove the key from the keychain.
    Delete,
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("agent-budget: error: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let first = agent_budget::cli::first_line(&e.to_string());
            return fail(format!("{first} (see 'agent-budget --help')"));
        }
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Key(what) => return key(what),
        Command::Dashboard(d) => return dashboard(d),
        Command::ClaudeCode(ClaudeCodeCommand::Setup(s)) => return setup(s),
    };
    let settings = match args.settings() {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let config = match settings.validate() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "agent_budget=info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match agent_budget::runtime::build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(async move {
        let server = match RunningServer::bind(config).await {
            Ok(s) => s,
            Err(e) => return fail(e),
        };
        // Tests and scripts read the actual port from this line on stderr.
        tracing::info!(port = server.port(), "ready");
        match agent_budget::api::session::new_link(server.service()) {
            Ok(url) if !server.service().admin.is_open() => tracing::info!(
                "dashboard: open {url} to sign in (works once, for five minutes; `agent-budget dashboard` makes another)"
            ),
            _ => {}
        }
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// `agent-budget key …`: the keychain directly, so it works with no proxy running.
fn key(what: KeyCommand) -> ExitCode {
    use agent_budget::keychain;
    use std::io::{IsTerminal, Read, Write};
    let runtime = match agent_budget::runtime::build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let said: Result<String, String> = runtime.block_on(async move {
        match what {
            KeyCommand::Set => {
                let mut text = String::new();
                let stdin = std::io::stdin();
                let read = if stdin.is_terminal() {
                    eprint!("Paste the Anthropic API key (sk-ant-…) and press Enter: ");
                    stdin.read_line(&mut text).map(|_| ())
                } else {
                    stdin.lock().read_to_string(&mut text).map(|_| ())
                };
                read.map_err(|e| format!("cannot read the key from standard input: {e}"))?;
                let key = agent_budget::config::parse_upstream_key(&text).map_err(|e| e.to_string())?;
                let last4 = key.last4();
                keychain::write(key).await.map_err(|e| e.to_string())?;
                Ok(format!("stored the Anthropic key ending in …{last4} in the OS keychain; a running agent-budget uses it from its next start (Settings in the dashboard changes it at once)"))
            }
            KeyCommand::Show => match keychain::read().await.map_err(|e| e.to_string())? {
                Some(k) => Ok(format!("the OS keychain holds an Anthropic key ending in …{}", k.last4())),
                None => Ok("the OS keychain holds no Anthropic key for agent-budget; store one with `agent-budget key set`".into()),
            },
            KeyCommand::Delete => match keychain::delete().await.map_err(|e| e.to_string())? {
                true => Ok("removed the Anthropic key from the OS keychain".into()),
                false => Err("the OS keychain holds no Anthropic key for agent-budget; nothing was removed".into()),
            },
        }
    });
    match said {
        Ok(line) => {
            let _ = writeln!(std::io::stdout(), "{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// `agent-budget dashboard`: asks the running server for a one-time sign-in link with the
/// admin token, prints it and opens it.
fn dashboard(d: Dashboard) -> ExitCode {
    let token = match d.admin_token {
        Some(t) => t,
        None => {
            let dir = d.data_dir.or_else(agent_budget::config::default_data_dir);
            let Some(dir) = dir else {
                return fail("no data directory: pass --data-dir");
            };
            let path = dir.join(agent_budget::admin::TOKEN_FILE);
            match std::fs::read_to_string(&path) {
                Ok(t) => t.trim().to_string(),
                Err(e) => {
                    return fail(format!(
                        "cannot read the admin token in {}: {e}; is agent-budget running with this --data-dir (or was it started with --admin-token)?",
                        path.display()
                    ));
                }
            }
        }
    };
    let runtime = match agent_budget::runtime::build() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the async runtime: {e}")),
    };
    let base = format!("http://{}:{}/agent-budget", d.host, d.port);
    let link: Result<String, String> = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| e.to_string())?;
        let r = client
            .post(format!("{base}/api/sign-in-links"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "agent-budget is not reachable at {base} ({e}); start it, or pass --host/--port"
                )
            })?;
        let status = r.status();
        let bytes = r.bytes().await.unwrap_or_default();
        let body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        match body["url"].as_str() {
            Some(url) if status.is_success() => Ok(url.to_string()),
            _ => Err(format!(
                "the server refused a sign-in link ({status}): {}",
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("no reason given")
            )),
        }
    });
    let url = match link {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{url}");
    if !d.no_browser {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if std::process::Command::new(opener)
            .arg(&url)
            .spawn()
            .is_err()
        {
            eprintln!("agent-budget: could not start a browser ({opener}); open the link above");
        }
    }
    ExitCode::SUCCESS
}

/// `agent-budget claude-code setup`: Claude Code's `/login` then signs in here.
fn setup(s: Setup) -> ExitCode {
    use agent_budget::claude_settings::{self, Setup as Done};
    let Some(path) = s
        .settings
        .or_else(|| dirs::home_dir().map(|h| claude_settings::settings_file(&h)))
    else {
        return fail("no home directory: pass --settings <path of Claude Code's settings.json>");
    };
    let host = if s.host.contains(':') && !s.host.starts_with('[') {
        format!("[{}]", s.host)
    } else {
        s.host
    };
    let mut gateway = format!("http://{host}:{}/agent-budget", s.port);
    if let Some(b) = s.budget.as_deref().filter(|b| !b.is_empty()) {
        if !b
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
        {
            return fail(format!(
                "'{b}' is not a budget name (letters, digits, '-', '_', '.')"
            ));
        }
        gateway = format!("{gateway}/b/{b}");
    }
    let said = match claude_settings::point_at(&path, &gateway, s.force) {
        Ok(Done::Unchanged) => format!(
            "{} already signs Claude Code in to {gateway}",
            path.display()
        ),
        Ok(Done::Written { backup }) => {
            let kept = backup.map_or(String::new(), |b| {
                format!(" (the earlier file is {})", b.display())
            });
            format!(
                "{} now signs Claude Code in to {gateway}{kept}",
                path.display()
            )
        }
        Err(e) => return fail(e),
    };
    use std::io::Write;
    let _ = writeln!(
        std::io::stdout(),
        "{said}.\nNext: run `claude`, then /login; approve the code it shows in agent-budget's dashboard (the desktop app opens it for you).\nWithout a browser: CLAUDE_CODE_USE_GATEWAY=1 ANTHROPIC_BASE_URL={gateway} ANTHROPIC_AUTH_TOKEN=<a virtual key of the budget> claude"
    );
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
