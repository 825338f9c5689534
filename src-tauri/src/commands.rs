//! Typed Tauri commands: one per dashboard operation (`ui/src/api/index.ts` `Op`), each a thin
//! call into the same service layer as the REST API. Errors arrive in the UI as `{type, message}`.

use crate::Core;
use agent_budget::budget::{BudgetPatch, NewBudget};
use agent_budget::dto::{
    BudgetDetail, BudgetView, Items, KeyCreated, NewKey, NewUpstreamKey, SessionPage, Settings,
    UpstreamKeyView, UsagePage,
};
use agent_budget::error::HttpError;
use agent_budget::pricing::{PriceEntry, PricingTable};
use agent_budget::record::AlertView;
use agent_budget::record::KeyView;
use agent_budget::record::stats::{SpendSeries, Stats};
use agent_budget::service::alerts::WebhookTest;
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

#[tauri::command]
pub async fn list_budgets(core: State<'_, Core>) -> Result<Items<BudgetView>> {
    Ok(Items {
        items: core.service()?.list_budgets(),
    })
}

#[tauri::command]
pub async fn get_budget(core: State<'_, Core>, id: String) -> Result<BudgetDetail> {
    Ok(core.service()?.budget_detail(&id).await?)
}

#[tauri::command]
pub async fn create_budget(core: State<'_, Core>, input: NewBudget) -> Result<BudgetView> {
    Ok(core.service()?.create_budget(input).await?)
}

#[tauri::command]
pub async fn patch_budget(
    core: State<'_, Core>,
    id: String,
    patch: BudgetPatch,
) -> Result<BudgetView> {
    Ok(core.service()?.patch_budget(&id, patch).await?)
}

#[tauri::command]
pub async fn delete_budget(core: State<'_, Core>, id: String) -> Result<()> {
    Ok(core.service()?.delete_budget(&id).await?)
}

#[tauri::command]
pub async fn usage(
    core: State<'_, Core>,
    id: String,
    limit: u32,
    offset: u64,
) -> Result<UsagePage> {
    Ok(core
        .service()?
        .usage_page(&id, Some(limit), Some(offset))
        .await?)
}

#[tauri::command]
pub async fn sessions(
    core: State<'_, Core>,
    id: String,
    limit: u32,
    offset: u64,
) -> Result<SessionPage> {
    Ok(core
        .service()?
        .sessions_page(&id, Some(limit), Some(offset))
        .await?)
}

#[tauri::command]
pub async fn list_keys(core: State<'_, Core>, id: String) -> Result<Items<KeyView>> {
    Ok(core.service()?.list_keys(&id).await?)
}

#[tauri::command]
pub async fn create_key(core: State<'_, Core>, id: String, input: NewKey) -> Result<KeyCreated> {
    Ok(core.service()?.create_key(&id, input).await?)
}

#[tauri::command]
pub async fn revoke_key(core: State<'_, Core>, id: String, key_id: String) -> Result<()> {
    Ok(core.service()?.revoke_key(&id, &key_id).await?)
}

#[tauri::command]
pub async fn upstream_key(core: State<'_, Core>) -> Result<UpstreamKeyView> {
    Ok(core.service()?.upstream_key())
}

#[tauri::command]
pub async fn set_upstream_key(
    core: State<'_, Core>,
    input: NewUpstreamKey,
) -> Result<UpstreamKeyView> {
    Ok(core.service()?.set_upstream_key(input).await?)
}

#[tauri::command]
pub async fn delete_upstream_key(core: State<'_, Core>) -> Result<()> {
    Ok(core.service()?.delete_upstream_key().await?)
}

#[tauri::command]
pub async fn alerts(
    core: State<'_, Core>,
    limit: u32,
    budget: Option<String>,
) -> Result<Items<AlertView>> {
    Ok(Items {
        items: core
            .service()?
            .alerts(Some(limit), budget.as_deref())
            .await?,
    })
}

#[tauri::command]
pub async fn pricing(core: State<'_, Core>) -> Result<PricingTable> {
    Ok(core.service()?.pricing_table())
}

#[tauri::command]
pub async fn put_price(core: State<'_, Core>, entry: PriceEntry) -> Result<PriceEntry> {
    Ok(core.service()?.put_price(entry).await?)
}

#[tauri::command]
pub async fn stats(core: State<'_, Core>) -> Result<Stats> {
    Ok(core.service()?.stats().await?)
}

#[tauri::command]
pub async fn spend(core: State<'_, Core>, days: u32) -> Result<SpendSeries> {
    Ok(core.service()?.spend_series(days).await?)
}

#[tauri::command]
pub async fn settings(core: State<'_, Core>) -> Result<Settings> {
    Ok(core.service()?.settings(core.port()))
}

#[tauri::command]
pub async fn test_webhook(core: State<'_, Core>, id: String) -> Result<WebhookTest> {
    Ok(core.service()?.test_webhook(&id).await?)
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
