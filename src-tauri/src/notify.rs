//! Desktop notifications: the text of each one, from one function, and sending it.

use agent_budget::budget::alert::AlertKind;
use agent_budget::events::CoreEvent;

/// Title and body for an event worth a notification (alerts, and sign-ins to approve).
pub fn text(e: &CoreEvent) -> Option<(String, String)> {
    if let CoreEvent::SignInRequested { user_code } = e {
        let body = format!(
            "Code {user_code}: compare it with Claude Code's, choose the budget it spends and approve it in agent-budget's window."
        );
        return Some(("Claude Code wants to sign in".to_string(), body));
    }
    if let CoreEvent::WindowAlert {
        window,
        threshold,
        message,
        ..
    } = e
    {
        let title = format!("Subscription: {window} window at {threshold}%");
        return Some((title, message.clone()));
    }
    let CoreEvent::AlertRaised {
        budget,
        kind,
        threshold,
        message,
        ..
    } = e
    else {
        return None;
    };
    let title = match kind {
        AlertKind::Threshold => format!("Budget '{budget}' at {}%", threshold.unwrap_or(0)),
        AlertKind::Blocked => format!("Budget '{budget}' blocked a request"),
        AlertKind::UnpricedModel => "A model has no price".to_string(),
        AlertKind::MalformedUsage => {
            format!("Budget '{budget}': the upstream reported an impossible usage")
        }
        AlertKind::Loop => format!("Budget '{budget}': a runaway loop?"),
        AlertKind::Test => return None,
    };
    Some((title, message.clone()))
}

/// Shows a notification; failures (no notification server) are logged, never fatal.
pub fn show(title: &str, body: &str) {
    let (title, body) = (title.to_string(), body.to_string());
    std::thread::spawn(move || {
        if let Err(e) = notify_rust::Notification::new()
            .appname("agent-budget")
            .summary(&title)
            .body(&body)
            .show()
        {
            tracing::warn!(error = %e, "could not show a desktop notification");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_window_alert_is_a_notification() {
        let e = CoreEvent::WindowAlert {
            account: "a1b2c3d4e5f6".into(),
            window: "5-hour".into(),
            threshold: 80,
            message: "Subscription a1b2c3d4e5f6: the 5-hour window is at 81 %".into(),
        };
        let (title, body) = text(&e).unwrap();
        assert_eq!(title, "Subscription: 5-hour window at 80%");
        assert!(body.contains("81 %"));
        assert_eq!(text(&CoreEvent::SubscriptionsChanged), None);
    }

    fn alert(kind: AlertKind, threshold: Option<u8>) -> CoreEvent {
        CoreEvent::AlertRaised {
            budget_id: 1,
            budget: "team".into(),
            kind,
            threshold,
            message: "the message".into(),
        }
    }

    #[test]
    fn alerts_become_notifications_and_nothing_else_does() {
        assert_eq!(
            text(&alert(AlertKind::Threshold, Some(80))),
            Some(("Budget 'team' at 80%".into(), "the message".into()))
        );
        assert_eq!(
            text(&alert(AlertKind::Blocked, None)).map(|t| t.0),
            Some("Budget 'team' blocked a request".into())
        );
        assert_eq!(
            text(&alert(AlertKind::UnpricedModel, None)).map(|t| t.0),
            Some("A model has no price".into())
        );
        assert_eq!(
            text(&alert(AlertKind::Loop, None)).map(|t| t.0),
            Some("Budget 'team': a runaway loop?".into())
        );
        assert_eq!(text(&alert(AlertKind::Test, None)), None);
        assert_eq!(text(&CoreEvent::PricingChanged { model: "m".into() }), None);
    }

    #[test]
    fn a_sign_in_to_approve_is_announced_with_its_code() {
        let sign_in = CoreEvent::SignInRequested {
            user_code: "BCDF-GHJK".into(),
        };
        let (title, body) = text(&sign_in).unwrap();
        assert_eq!(title, "Claude Code wants to sign in");
        assert!(body.starts_with("Code BCDF-GHJK:"), "{body}");
    }
}
