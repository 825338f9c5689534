//! The tray: a pure view of the core's state (`tray_view`), and the thin glue that turns it
//! into Tauri's tray icon and menu.

use agent_budget::budget::level::Level;
use agent_budget::money::Money;

/// What the icon shows: the worst state of any budget, or that the proxy is not running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IconState {
    Ok,
    Warning,
    Blocked,
    Stopped,
}

/// Menu item ids, as an enum: never string matching in handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MenuId {
    Budget(String),
    OpenDashboard,
    /// The dashboard in the default browser, signed in by a one-time link.
    OpenInBrowser,
    CopyUrl,
    PauseNotifications,
    LaunchAtLogin,
    Quit,
}

impl MenuId {
    pub fn as_id(&self) -> String {
        match self {
            MenuId::Budget(name) => format!("budget:{name}"),
            MenuId::OpenDashboard => "open".into(),
            MenuId::OpenInBrowser => "browser".into(),
            MenuId::CopyUrl => "copy-url".into(),
            MenuId::PauseNotifications => "pause".into(),
            MenuId::LaunchAtLogin => "autostart".into(),
            MenuId::Quit => "quit".into(),
        }
    }
    pub fn parse(id: &str) -> Option<MenuId> {
        Some(match id {
            "open" => MenuId::OpenDashboard,
            "browser" => MenuId::OpenInBrowser,
            "copy-url" => MenuId::CopyUrl,
            "pause" => MenuId::PauseNotifications,
            "autostart" => MenuId::LaunchAtLogin,
            "quit" => MenuId::Quit,
            other => MenuId::Budget(other.strip_prefix("budget:")?.to_string()),
        })
    }
}

/// One budget as the tray needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetLine {
    pub name: String,
    pub spent: Money,
    pub cap: Option<Money>,
    pub percent: f64,
    pub blocked: u64,
    pub level: Level,
    /// `projected_exhaustion_at` as the API renders it (in the configured zone).
    pub cap_at: Option<String>,
}

/// Everything the tray shows, gathered from the core.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Why the proxy is not running, if it is not.
    pub stopped: Option<String>,
    /// Why usage records cannot be saved, while they cannot (requests are refused then).
    pub storage: Option<String>,
    pub today: Money,
    /// Today's date in the configured zone (YYYY-MM-DD), to say "cap at ~15:40" or with a date.
    pub date: String,
    /// The top-level budgets, listed.
    pub budgets: Vec<BudgetLine>,
    /// The worst level of the budgets below them (not listed, but they colour the icon).
    pub nested: Option<Level>,
    /// The most recently seen subscription's windows (`subscription_line`), if any.
    pub subscription: Option<String>,
    pub muted: bool,
    pub autostart: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: MenuId,
    pub label: String,
    pub enabled: bool,
    /// Some for check items.
    pub checked: Option<bool>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TrayView {
    pub icon: IconState,
    pub tooltip: String,
    /// Menu items in order; `None` is a separator.
    pub items: Vec<Option<Item>>,
}

/// The tray's budget lines: the top-level budgets (a parent's figures hold its children's),
/// and the worst level of those below them, which still colours the icon.
pub fn lines(budgets: Vec<agent_budget::dto::BudgetView>) -> (Vec<BudgetLine>, Option<Level>) {
    let (top, below): (Vec<_>, Vec<_>) = budgets.into_iter().partition(|b| b.parent.is_none());
    let nested = below.iter().map(|b| b.level).max();
    let lines = top
        .into_iter()
        .map(|b| BudgetLine {
            name: b.name,
            spent: b.spent_dollars,
            cap: b.max_dollars,
            percent: b.percent_used,
            blocked: b.blocked,
            level: b.level,
            cap_at: b.projected_exhaustion_at,
        })
        .collect();
    (lines, nested)
}

/// "15:40" for an instant rendered in the configured zone, with the day and month when it is
/// not `today` ("5 Dec 15:40"); None for anything else.
fn clock(at: &str, today: &str) -> Option<String> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (date, time) = (at.get(..10)?, at.get(11..16)?);
    if date == today {
        return Some(time.to_string());
    }
    let month: usize = date.get(5..7)?.parse().ok()?;
    let day: u32 = date.get(8..10)?.parse().ok()?;
    Some(format!(
        "{day} {} {time}",
        MONTHS.get(month.checked_sub(1)?)?
    ))
}

/// "cap at ~15:40" for a projection, with the date when it is not `today`.
pub fn cap_at(at: &str, today: &str) -> Option<String> {
    clock(at, today).map(|c| format!("cap at ~{c}"))
}

/// "5h 43 % · 7d 12 % · resets 15:40": a subscription's windows, and when the one that binds
/// now (its representative claim; the 5-hour one unless it says otherwise) resets.
pub fn subscription_line(s: &agent_budget::dto::SubscriptionView, today: &str) -> Option<String> {
    let share = |label: &str, w: &Option<agent_budget::dto::WindowView>| {
        let u = w.as_ref()?.utilization?;
        Some(format!("{label} {} %", (u * 100.0).round() as i64))
    };
    let mut parts: Vec<String> = [share("5h", &s.five_hour), share("7d", &s.seven_day)]
        .into_iter()
        .flatten()
        .collect();
    let binding = match s.representative_claim.as_deref() {
        Some("seven_day") => &s.seven_day,
        _ => &s.five_hour,
    };
    let resets = binding.as_ref().and_then(|w| w.resets_at.as_deref());
    if let Some(at) = resets.and_then(|r| clock(r, today)) {
        parts.push(format!("resets {at}"));
    }
    (!parts.is_empty()).then(|| parts.join(" · "))
}

fn item(id: MenuId, label: impl Into<String>) -> Option<Item> {
    Some(Item {
        id,
        label: label.into(),
        enabled: true,
        checked: None,
    })
}

/// What a running proxy lists: the subscription's windows, then each top-level budget.
fn running_lines(s: &Snapshot) -> Vec<Option<Item>> {
    let mut items = Vec::new();
    if let Some(line) = &s.subscription {
        items.push(item(MenuId::OpenDashboard, line.clone()));
    }
    for b in &s.budgets {
        let cap = b
            .cap
            .map(Money::display_cents)
            .unwrap_or_else(|| "no cap".into());
        let mut label = format!(
            "{}  {} / {}  {}%",
            b.name,
            b.spent.display_cents(),
            cap,
            b.percent.floor()
        );
        // A budget already at its cap says so in its percentage.
        let at = b.cap_at.as_deref().filter(|_| b.percent < 100.0);
        if let Some(at) = at.and_then(|a| cap_at(a, &s.date)) {
            label.push_str(&format!("  {at}"));
        }
        items.push(item(MenuId::Budget(b.name.clone()), label));
    }
    items
}

pub fn tray_view(s: &Snapshot) -> TrayView {
    let icon = match &s.stopped {
        Some(_) => IconState::Stopped,
        None if s.storage.is_some() => IconState::Blocked,
        None => match s.budgets.iter().map(|b| b.level).chain(s.nested).max() {
            Some(Level::Over) => IconState::Blocked,
            Some(Level::Warning) => IconState::Warning,
            _ => IconState::Ok,
        },
    };
    let tooltip = match (&s.stopped, &s.storage) {
        (Some(why), _) => format!("agent-budget: proxy not running — {why}"),
        (None, Some(why)) => format!("agent-budget: usage cannot be saved — {why}"),
        (None, None) => format!("agent-budget: {} spent today", s.today.display_cents()),
    };
    let mut items = Vec::new();
    if let (None, Some(why)) = (&s.stopped, &s.storage) {
        items.push(Some(Item {
            id: MenuId::OpenDashboard,
            label: format!("Usage cannot be saved: {why}"),
            enabled: false,
            checked: None,
        }));
    }
    match &s.stopped {
        Some(why) => items.push(Some(Item {
            id: MenuId::OpenDashboard,
            label: format!("Proxy not running: {why}"),
            enabled: false,
            checked: None,
        })),
        None => items.extend(running_lines(s)),
    }
    items.push(None);
    items.push(item(MenuId::OpenDashboard, "Open dashboard"));
    if s.stopped.is_none() {
        items.push(item(MenuId::OpenInBrowser, "Open dashboard in browser"));
    }
    items.push(item(MenuId::CopyUrl, "Copy proxy URL"));
    items.push(Some(Item {
        id: MenuId::PauseNotifications,
        label: "Pause notifications".into(),
        enabled: true,
        checked: Some(s.muted),
    }));
    items.push(Some(Item {
        id: MenuId::LaunchAtLogin,
        label: "Launch at login".into(),
        enabled: true,
        checked: Some(s.autostart),
    }));
    items.push(None);
    items.push(item(MenuId::Quit, "Quit agent-budget"));
    TrayView {
        icon,
        tooltip,
        items,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(name: &str, spent: &str, cap: Option<&str>, percent: f64, blocked: u64) -> BudgetLine {
        let (spent, cap) = (
            Money::parse(spent).unwrap(),
            cap.map(|c| Money::parse(c).unwrap()),
        );
        BudgetLine {
            name: name.into(),
            spent,
            cap,
            percent,
            blocked,
            level: Level::of(spent, cap, blocked),
            cap_at: None,
        }
    }
    fn snap(budgets: Vec<BudgetLine>) -> Snapshot {
        Snapshot {
            stopped: None,
            storage: None,
            today: Money::parse("3.5").unwrap(),
            date: "2026-12-03".into(),
            budgets,
            nested: None,
            subscription: None,
            muted: false,
            autostart: true,
        }
    }

    /// A budget as the API shows it, with only what the tray reads set.
    fn view(name: &str, parent: Option<&str>, level: &str) -> agent_budget::dto::BudgetView {
        serde_json::from_value(serde_json::json!({
            "id": 1, "name": name, "max_dollars": "10", "max_tokens": null, "period": "daily",
            "webhook_url": null, "thresholds": [50], "admission": "strict",
            "max_dollars_per_hour": null, "max_request_dollars": null, "models": null,
            "loop_guard": null, "parent": parent, "max_session_dollars": null,
            "created_at": "2026-12-03T00:00:00Z", "spent_dollars": "1", "spent_tokens": 0,
            "reserved_dollars": "0", "remaining_dollars": "9", "percent_used": 10.0,
            "level": level, "requests": 1, "blocked": 0, "period_start": "2026-12-03T00:00:00Z",
            "resets_at": null, "worst_case_dollars": null, "requests_that_fit": null,
            "burn_rate_per_hour": "0", "projected_exhaustion_at": null,
        }))
        .unwrap()
    }

    #[test]
    fn only_top_level_budgets_are_listed_and_those_below_give_their_worst_level() {
        let (lines, nested) = lines(vec![
            view("total", None, "ok"),
            view("a", Some("total"), "warning"),
            view("b", Some("total"), "over"),
        ]);
        let names: Vec<&str> = lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!((names, nested), (vec!["total"], Some(Level::Over)));
    }

    #[test]
    fn a_budget_below_the_listed_ones_colours_the_icon_too() {
        let mut s = snap(vec![line("total", "1", Some("10"), 10.0, 0)]);
        s.nested = Some(Level::Over);
        assert_eq!(tray_view(&s).icon, IconState::Blocked);
    }

    #[test]
    fn the_icon_shows_the_worst_budget() {
        let ok = snap(vec![line("a", "1", Some("10"), 10.0, 0)]);
        assert_eq!(tray_view(&ok).icon, IconState::Ok);
        let warn = snap(vec![
            line("a", "1", Some("10"), 10.0, 0),
            line("b", "8", Some("10"), 80.0, 0),
        ]);
        assert_eq!(tray_view(&warn).icon, IconState::Warning);
        let blocked = snap(vec![line("a", "1", Some("10"), 10.0, 2)]);
        assert_eq!(tray_view(&blocked).icon, IconState::Blocked);
        let full = snap(vec![line("a", "10", Some("10"), 100.0, 0)]);
        assert_eq!(tray_view(&full).icon, IconState::Blocked);
        let stopped = Snapshot {
            stopped: Some("port 4727 is in use".into()),
            ..ok
        };
        let v = tray_view(&stopped);
        assert_eq!(v.icon, IconState::Stopped);
        assert!(v.tooltip.contains("not running") && v.tooltip.contains("4727"));
        assert_eq!(v.items[0].as_ref().map(|i| i.enabled), Some(false));
    }

    #[test]
    fn a_budget_on_course_for_its_cap_says_when() {
        let cases = [
            ("2026-12-03T15:40:59.999+01:00", Some("cap at ~15:40")),
            ("2026-12-04T09:05:00.000+01:00", Some("cap at ~4 Dec 09:05")),
            ("2027-01-01T00:00:00.000-05:00", Some("cap at ~1 Jan 00:00")),
            ("garbage", None),
        ];
        for (at, want) in cases {
            assert_eq!(cap_at(at, "2026-12-03").as_deref(), want, "{at}");
        }
        let mut b = line("team", "6", Some("10"), 60.0, 0);
        b.cap_at = Some("2026-12-03T15:40:00.000+01:00".into());
        let v = tray_view(&snap(vec![b]));
        assert_eq!(
            v.items[0].as_ref().map(|i| i.label.as_str()),
            Some("team  $6.00 / $10.00  60%  cap at ~15:40")
        );
        let mut full = line("full", "10", Some("10"), 100.0, 0);
        full.cap_at = Some("2026-12-03T12:00:00.000+01:00".into());
        let v = tray_view(&snap(vec![full]));
        assert_eq!(
            v.items[0].as_ref().map(|i| i.label.as_str()),
            Some("full  $10.00 / $10.00  100%")
        );
    }

    #[test]
    fn the_menu_lists_budgets_then_actions() {
        let v = tray_view(&snap(vec![
            line("team", "24.911", Some("25"), 99.6, 0),
            line("default", "0", None, 0.0, 0),
        ]));
        assert_eq!(v.tooltip, "agent-budget: $3.50 spent today");
        let labels: Vec<String> = v
            .items
            .iter()
            .map(|i| i.as_ref().map(|i| i.label.clone()).unwrap_or_default())
            .collect();
        assert_eq!(
            labels,
            [
                "team  $24.92 / $25.00  99%",
                "default  $0.00 / no cap  0%",
                "",
                "Open dashboard",
                "Open dashboard in browser",
                "Copy proxy URL",
                "Pause notifications",
                "Launch at login",
                "",
                "Quit agent-budget"
            ]
        );
        assert_eq!(v.items[7].as_ref().and_then(|i| i.checked), Some(true));
        assert_eq!(v.items[6].as_ref().and_then(|i| i.checked), Some(false));
    }

    fn subscription(claim: &str) -> agent_budget::dto::SubscriptionView {
        serde_json::from_value(serde_json::json!({
            "account": "a1b2c3d4e5f6", "representative_claim": claim, "status": "allowed",
            "seen_at": "2026-12-03T12:00:00+01:00",
            "five_hour": {"utilization": 0.434, "resets_at": "2026-12-03T15:40:00+01:00",
                "status": "allowed", "per_hour": null, "fills_at": null},
            "seven_day": {"utilization": 0.12, "resets_at": "2026-12-08T09:00:00+01:00",
                "status": "allowed", "per_hour": null, "fills_at": null},
        }))
        .unwrap()
    }

    #[test]
    fn the_subscription_line_says_both_windows_and_the_binding_reset() {
        let today = "2026-12-03";
        assert_eq!(
            subscription_line(&subscription("five_hour"), today).as_deref(),
            Some("5h 43 % · 7d 12 % · resets 15:40")
        );
        assert_eq!(
            subscription_line(&subscription("seven_day"), today).as_deref(),
            Some("5h 43 % · 7d 12 % · resets 8 Dec 09:00")
        );
        let mut s = snap(vec![line("team", "1", Some("10"), 10.0, 0)]);
        s.subscription = subscription_line(&subscription("five_hour"), today);
        let first = tray_view(&s).items[0].clone().unwrap();
        assert_eq!(first.label, "5h 43 % · 7d 12 % · resets 15:40");
        let mut none = subscription("five_hour");
        (none.five_hour, none.seven_day) = (None, None);
        assert_eq!(subscription_line(&none, today), None);
    }

    #[test]
    fn a_database_that_cannot_be_written_shows_as_blocked_with_the_reason() {
        let mut s = snap(vec![line("a", "1", Some("10"), 10.0, 0)]);
        s.storage = Some("database or disk is full".into());
        let v = tray_view(&s);
        assert_eq!(v.icon, IconState::Blocked);
        assert_eq!(
            v.tooltip,
            "agent-budget: usage cannot be saved — database or disk is full"
        );
        let first = v.items[0].as_ref().unwrap();
        assert_eq!(
            (first.label.as_str(), first.enabled),
            ("Usage cannot be saved: database or disk is full", false)
        );
        // The budgets are still listed below it.
        assert!(v.items[1].as_ref().unwrap().label.starts_with("a  "));
    }

    #[test]
    fn menu_ids_round_trip() {
        for id in [
            MenuId::Budget("my-agents".into()),
            MenuId::OpenDashboard,
            MenuId::OpenInBrowser,
            MenuId::CopyUrl,
            MenuId::PauseNotifications,
            MenuId::LaunchAtLogin,
            MenuId::Quit,
        ] {
            assert_eq!(MenuId::parse(&id.as_id()), Some(id));
        }
        assert_eq!(MenuId::parse("nonsense"), None);
    }
}
