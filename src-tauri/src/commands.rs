//! Tauri commands: the dashboard's REST API in-process (`api`), and the desktop app's own
//! settings. Errors arrive in the UI as `{type, message}`.

use crate::Core;
use agent_budget::error::HttpError;
use serde::Serialize;
use tauri::{AppHandle, Manager, State};
use ts_rs::TS;

/// A command's failure, tagged so the UI can branch on `type`.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export)]
pub struct CommandError {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

impl From<HttpError> for CommandError {
    fn from(e: HttpError) -> CommandError {
        CommandError {
            kind: e.kind.to_string(),
            message: e.message,
        }
    }
}

type Result<T> = std::result::Result<T, CommandError>;

/// The dashboard's operations: the REST API itself, called inside the process
/// (`RunningServer::api`), so the route table is the one list of them. The UI names each by
/// its method and path (`ui/src/api`); an error arrives as the API's `{type, message}`.
#[tauri::command]
pub async fn api(
    core: State<'_, Core>,
    method: String,
    path: String,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    Ok(core.api()?.call(&method, &path, body).await?)
}

/// The desktop app's own state, for its settings page.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export)]
pub struct DesktopStatus {
    pub running: bool,
    /// Why the proxy is not running, if it is not.
    pub error: Option<String>,
    pub port: u16,
    pub autostart: bool,
    pub notifications_muted: bool,
    /// The team database (PostgreSQL), its password hidden; None: this proxy alone.
    pub database: Option<String>,
    /// Set by AGENT_BUDGET_DATABASE_URL, which the settings page cannot change.
    pub database_from_env: bool,
}

#[tauri::command]
pub async fn desktop_status(app: AppHandle) -> Result<DesktopStatus> {
    Ok(crate::status(&app))
}

/// Starts the proxy on `port` after it failed to start (e.g. the port was taken).
#[tauri::command]
pub async fn restart_proxy(app: AppHandle, port: u16) -> Result<DesktopStatus> {
    if app.state::<Core>().service().is_ok() {
        return Err(CommandError {
            kind: "invalid_request_error".into(),
            message: "the proxy is already running".into(),
        });
    }
    crate::start_core(&app, Some(port)).await;
    running(&app)
}

#[tauri::command]
pub async fn set_autostart(app: AppHandle, enabled: bool) -> Result<DesktopStatus> {
    crate::set_autostart(&app, enabled).map_err(|message| CommandError {
        kind: "api_error".into(),
        message,
    })?;
    Ok(crate::status(&app))
}

#[tauri::command]
pub async fn set_notifications_muted(app: AppHandle, muted: bool) -> Result<DesktopStatus> {
    app.state::<Core>().set_muted(muted);
    Ok(crate::status(&app))
}

/// Opens `path` of the server (a download, say) in the default browser, signed in by a
/// one-time link: the app's own window has no browser session.
#[tauri::command]
pub async fn open_in_browser(app: AppHandle, path: String) -> Result<()> {
    crate::open_in_browser(&app.state::<Core>(), Some(&path));
    Ok(())
}

/// Saves the team database (None or empty: none) and restarts the proxy on it.
#[tauri::command]
pub async fn set_team_database(app: AppHandle, url: Option<String>) -> Result<DesktopStatus> {
    crate::set_database(&app, url)
        .await
        .map_err(|message| CommandError {
            kind: "invalid_request_error".into(),
            message,
        })?;
    running(&app)
}

/// The app's state once the proxy should be running, or why it is not.
fn running(app: &AppHandle) -> Result<DesktopStatus> {
    let s = crate::status(app);
    match &s.error {
        Some(why) => Err(CommandError {
            kind: "api_error".into(),
            message: why.clone(),
        }),
        None => Ok(s),
    }
}
