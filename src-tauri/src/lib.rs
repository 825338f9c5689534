//! The desktop app: the headless core started inside Tauri, a tray that shows spend, native
//! notifications for alerts, and the dashboard in a window over typed commands. Wiring only;
//! the logic lives in the core and in the pure `tray` and `notify` modules.

mod commands;
pub mod notify;
mod prefs;
pub mod tray;

use agent_budget::events::CoreEvent;
use agent_budget::server::InProcessApi;
use agent_budget::service::Service;
use agent_budget::{RunningServer, Settings};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, Wry};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tray::{IconState, MenuId};

/// The core as the app holds it: running, or why not.
#[derive(Default)]
pub struct Core {
    service: Mutex<Option<Arc<Service>>>,
    /// The REST API in-process, while the proxy runs.
    api: Mutex<Option<InProcessApi>>,
    server: tokio::sync::Mutex<Option<RunningServer>>,
    stopped: Mutex<Option<String>>,
    port: AtomicU16,
    muted: AtomicBool,
    dirty: AtomicBool,
    /// Where preferences are saved (the app's config dir), once known.
    prefs_dir: Mutex<Option<std::path::PathBuf>>,
    /// The team database saved in the preferences.
    database: Mutex<Option<String>>,
}

impl Core {
    fn service(&self) -> Result<Arc<Service>, commands::CommandError> {
        let s = self
            .service
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.ok_or_else(|| commands::CommandError {
            kind: "api_error".into(),
            message: format!(
                "the proxy is not running: {}",
                self.stopped().unwrap_or_default()
            ),
        })
    }
    fn api(&self) -> Result<InProcessApi, commands::CommandError> {
        self.service()?;
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner()).clone();
        api.ok_or_else(|| commands::CommandError {
            kind: "api_error".into(),
            message: "the proxy is not running".into(),
        })
    }
    fn stopped(&self) -> Option<String> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn port(&self) -> u16 {
        self.port.load(Ordering::Relaxed)
    }
    fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }
    fn set_muted(&self, muted: bool) {
        self.muted.store(muted, Ordering::Relaxed);
        self.mark_dirty();
        if let Err(e) = self.save_prefs() {
            tracing::warn!(error = %e, "could not save preferences; the setting lasts until quit");
        }
    }
    fn database(&self) -> Option<String> {
        self.database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
    fn save_prefs(&self) -> Result<(), String> {
        let dir = self
            .prefs_dir
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(dir) = dir else {
            return Err("this system has no app config directory".into());
        };
        let now = prefs::Prefs {
            notifications_muted: self.muted.load(Ordering::Relaxed),
            database: self.database(),
        };
        prefs::save(&dir, &now).map_err(|e| e.to_string())
    }
}

/// Saves the team database and restarts the proxy on it (None: this proxy alone).
async fn set_database(app: &AppHandle, url: Option<String>) -> Result<(), String> {
    if std::env::var_os("AGENT_BUDGET_DATABASE_URL").is_some() {
        return Err(
            "AGENT_BUDGET_DATABASE_URL is set for this app and wins; change it there".into(),
        );
    }
    let url = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty());
    if let Some(u) = &url {
        agent_budget::config::check_database(u).map_err(|e| e.to_string())?;
    }
    let core = app.state::<Core>();
    *core.database.lock().unwrap_or_else(|p| p.into_inner()) = url;
    core.save_prefs()
        .map_err(|e| format!("could not save the team database: {e}"))?;
    let port = core.port();
    let running = core.server.lock().await.take();
    if let Some(server) = running {
        *core.service.lock().unwrap_or_else(|p| p.into_inner()) = None;
        *core.api.lock().unwrap_or_else(|p| p.into_inner()) = None;
        server.shutdown().await;
    }
    start_core(app, Some(port)).await;
    Ok(())
}

/// Turns launch at login on or off.
fn set_autostart(app: &AppHandle, enabled: bool) -> Result<(), String> {
    // The autostart plugin writes ~/.config/autostart/<app>.desktop but does not create the
    // folder, which a fresh profile lacks.
    if let (true, Some(dir)) = (enabled && cfg!(target_os = "linux"), dirs::config_dir()) {
        let _ = std::fs::create_dir_all(dir.join("autostart"));
    }
    let a = app.autolaunch();
    let done = if enabled { a.enable() } else { a.disable() };
    done.map_err(|e| format!("could not change launch at login: {e}"))?;
    app.state::<Core>().mark_dirty();
    Ok(())
}

fn status(app: &AppHandle) -> commands::DesktopStatus {
    let core = app.state::<Core>();
    commands::DesktopStatus {
        running: core.service().is_ok(),
        error: core.stopped(),
        port: core.port(),
        autostart: app.autolaunch().is_enabled().unwrap_or(false),
        notifications_muted: core.muted.load(Ordering::Relaxed),
        database: std::env::var("AGENT_BUDGET_DATABASE_URL")
            .ok()
            .or_else(|| core.database())
            .map(|u| agent_budget::config::redact_database(&u)),
        database_from_env: std::env::var_os("AGENT_BUDGET_DATABASE_URL").is_some(),
    }
}

/// The server's settings from the environment variables `agent-budget serve` reads, parsed
/// by the same definitions (`agent_budget::cli`): a bad value is an error here too.
fn settings_from_env() -> Result<Settings, String> {
    agent_budget::cli::ServeArgs::from_env()?.settings()
}

fn icon(state: IconState) -> Option<Image<'static>> {
    let bytes: &'static [u8] = match state {
        IconState::Ok => include_bytes!("../../icons/tray-ok.png"),
        IconState::Warning => include_bytes!("../../icons/tray-warning.png"),
        IconState::Blocked => include_bytes!("../../icons/tray-blocked.png"),
        IconState::Stopped => include_bytes!("../../icons/tray-stopped.png"),
    };
    Image::from_bytes(bytes).ok()
}

async fn snapshot(app: &AppHandle) -> tray::Snapshot {
    let core = app.state::<Core>();
    let autostart = app.autolaunch().is_enabled().unwrap_or(false);
    let muted = core.muted.load(Ordering::Relaxed);
    let service = core.service().ok();
    let Some(service) = service else {
        return tray::Snapshot {
            stopped: Some(core.stopped().unwrap_or_default()),
            storage: None,
            today: Default::default(),
            date: String::new(),
            budgets: vec![],
            nested: None,
            subscription: None,
            muted,
            autostart,
        };
    };
    let today = service
        .stats()
        .await
        .map(|s| s.today.dollars)
        .unwrap_or_default();
    let (budgets, nested) = tray::lines(service.list_budgets());
    let date = (service.config.zone)
        .day(agent_budget::budget::period::now())
        .to_string();
    let subscription =
        (service.subscriptions().first()).and_then(|s| tray::subscription_line(s, &date));
    tray::Snapshot {
        stopped: None,
        storage: service.store.health.failure(),
        today,
        date,
        budgets,
        nested,
        subscription,
        muted,
        autostart,
    }
}

fn menu(app: &AppHandle, view: &tray::TrayView) -> tauri::Result<Menu<Wry>> {
    let mut items: Vec<Box<dyn IsMenuItem<Wry>>> = Vec::new();
    for it in &view.items {
        match it {
            None => items.push(Box::new(PredefinedMenuItem::separator(app)?)),
            Some(i) => match i.checked {
                Some(c) => items.push(Box::new(CheckMenuItem::with_id(
                    app,
                    i.id.as_id(),
                    &i.label,
                    i.enabled,
                    c,
                    None::<&str>,
                )?)),
                None => items.push(Box::new(MenuItem::with_id(
                    app,
                    i.id.as_id(),
                    &i.label,
                    i.enabled,
                    None::<&str>,
                )?)),
            },
        }
    }
    let refs: Vec<&dyn IsMenuItem<Wry>> = items.iter().map(|b| b.as_ref()).collect();
    Menu::with_items(app, &refs)
}

async fn refresh_tray(app: &AppHandle) {
    let view = tray::tray_view(&snapshot(app).await);
    let Some(tray) = app.tray_by_id("main") else {
        return;
    };
    if let Ok(m) = menu(app, &view) {
        let _ = tray.set_menu(Some(m));
    }
    let _ = tray.set_icon(icon(view.icon));
    let _ = tray.set_tooltip(Some(&view.tooltip));
}

fn show_main(app: &AppHandle, hash: Option<&str>) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
        if let Some(h) = hash {
            let _ = w.eval(format!("location.hash = {}", serde_json::Value::from(h)));
        }
    }
}

/// Opens the dashboard in the default browser through a one-time sign-in link (the browser has
/// no session of its own; the app's window needs none).
fn open_in_browser(core: &Core, next: Option<&str>) {
    let Ok(service) = core.service() else { return };
    let url = match agent_budget::api::session::new_link_to(&service, next) {
        Ok(url) => url,
        Err(e) => return tracing::warn!("no sign-in link: {}", e.message),
    };
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener).arg(&url).spawn() {
        tracing::warn!(error = %e, "could not start a browser ({opener})");
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    let core = app.state::<Core>();
    match MenuId::parse(id) {
        Some(MenuId::OpenDashboard) => show_main(app, None),
        Some(MenuId::OpenInBrowser) => open_in_browser(&core, None),
        Some(MenuId::Budget(name)) => show_main(app, Some(&format!("#/budgets/{name}"))),
        Some(MenuId::CopyUrl) => {
            let url = format!("http://localhost:{}/agent-budget", core.port());
            let _ = app.clipboard().write_text(url);
        }
        Some(MenuId::PauseNotifications) => {
            core.set_muted(!core.muted.load(Ordering::Relaxed));
        }
        Some(MenuId::LaunchAtLogin) => {
            let a = app.autolaunch();
            let _ = if a.is_enabled().unwrap_or(false) {
                a.disable()
            } else {
                a.enable()
            };
            core.dirty.store(true, Ordering::Relaxed);
        }
        Some(MenuId::Quit) => {
            let app = app.clone();
            tauri::async_runtime::spawn(async move {
                let server = app.state::<Core>().server.lock().await.take();
                if let Some(s) = server {
                    s.shutdown().await;
                }
                app.exit(0);
            });
        }
        None => {}
    }
}

/// Starts the core (on `port` if given); on failure the app stays up, says why, and the tray
/// shows the proxy stopped.
async fn start_core(app: &AppHandle, port: Option<u16>) {
    let core = app.state::<Core>();
    let validated = settings_from_env().and_then(|mut settings| {
        if port.is_some() {
            settings.port = port;
        }
        if settings.database.is_none() {
            settings.database = core.database();
        }
        settings.validate().map_err(|e| e.to_string())
    });
    let bound = match validated {
        Ok(config) => {
            core.port.store(config.port, Ordering::Relaxed);
            RunningServer::bind(config).await.map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    };
    match bound {
        Ok(server) => {
            core.port.store(server.port(), Ordering::Relaxed);
            let service = server.service().clone();
            *core.service.lock().unwrap_or_else(|p| p.into_inner()) = Some(service.clone());
            *core.api.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.api());
            *core.server.lock().await = Some(server);
            *core.stopped.lock().unwrap_or_else(|p| p.into_inner()) = None;
            forward_events(app.clone(), service);
        }
        Err(why) => {
            tracing::error!(error = %why, "the proxy could not start");
            notify::show("agent-budget: the proxy is not running", &why);
            *core.stopped.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
        }
    }
    core.mark_dirty();
}

/// Starts the core and builds the tray once the app is up.
fn setup(app: &mut tauri::App) -> Result<(), Box<dyn std::error::Error>> {
    let handle = app.handle().clone();
    if let Ok(dir) = handle.path().app_config_dir() {
        let core = handle.state::<Core>();
        let saved = prefs::load(&dir);
        core.muted
            .store(saved.notifications_muted, Ordering::Relaxed);
        *core.database.lock().unwrap_or_else(|p| p.into_inner()) = saved.database;
        *core.prefs_dir.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir);
    }
    tauri::async_runtime::block_on(start_core(&handle, None));
    let initial = tauri::async_runtime::block_on(snapshot(&handle));
    let view = tray::tray_view(&initial);
    let mut builder = TrayIconBuilder::with_id("main")
        .tooltip(&view.tooltip)
        .menu(&menu(&handle, &view)?)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, e| on_menu(app, e.id().as_ref()));
    if let Some(i) = icon(view.icon) {
        builder = builder.icon(i);
    }
    builder.build(app)?;
    tauri::async_runtime::spawn(redraw_tray(handle));
    Ok(())
}

/// Redraws the tray at most twice a second, only when something changed. The database's
/// health has no event (the writer is a plain thread), so it is compared.
async fn redraw_tray(handle: AppHandle) {
    let mut storage = None;
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let core = handle.state::<Core>();
        let now = core.service().ok().and_then(|s| s.store.health.failure());
        let changed = now != storage;
        if let (None, Some(why)) = (&storage, &now) {
            notify::show(
                "agent-budget: usage cannot be saved",
                &format!("Requests are refused until it can: {why}"),
            );
        }
        storage = now;
        if core.dirty.swap(false, Ordering::Relaxed) || changed {
            refresh_tray(&handle).await;
        }
    }
}

/// Core events → the webview (live updates), notifications, and a (coalesced) tray refresh.
fn forward_events(app: AppHandle, service: Arc<Service>) {
    let mut rx = service.events.subscribe();
    tauri::async_runtime::spawn(async move {
        loop {
            let event: CoreEvent = match rx.recv().await {
                Ok(e) => e,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            };
            let _ = app.emit("core-event", &event);
            let core = app.state::<Core>();
            if let (Some((title, body)), false) =
                (notify::text(&event), core.muted.load(Ordering::Relaxed))
            {
                notify::show(&title, &body);
            }
            // A sign-in waits for the admin: the window opens on its page, signed in.
            if let CoreEvent::SignInRequested { user_code } = &event {
                show_main(&app, Some(&format!("#/device?user_code={user_code}")));
            }
            core.mark_dirty();
        }
    });
}

pub fn run() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "agent_budget=info".into()),
        )
        .with_writer(std::io::stderr)
        .try_init();
    // The core's runtime, sized as for `serve` (agent_budget::runtime). It lives until the
    // process exits; if it cannot be built, Tauri's default runtime is used.
    let runtime = agent_budget::runtime::build();
    match &runtime {
        Ok(rt) => tauri::async_runtime::set(rt.handle().clone()),
        Err(e) => tracing::warn!(error = %e, "using Tauri's default async runtime"),
    }
    let app = tauri::Builder::default()
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            show_main(app, None)
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            None,
        ))
        .plugin(tauri_plugin_clipboard_manager::init())
        .manage(Core::default())
        .invoke_handler(tauri::generate_handler![
            commands::api,
            commands::desktop_status,
            commands::restart_proxy,
            commands::set_autostart,
            commands::set_notifications_muted,
            commands::set_team_database,
            commands::open_in_browser,
        ])
        .setup(setup)
        .on_window_event(|window, event| {
            // Closing the window hides it; the proxy keeps running in the tray.
            if let tauri::WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(tauri::generate_context!("../tauri.conf.json"));
    match app {
        Ok(app) => app.run(|_, _| {}),
        Err(e) => {
            eprintln!("agent-budget: error: the desktop app could not start: {e}");
            std::process::exit(1);
        }
    }
}
