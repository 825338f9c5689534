use super::*;

fn s() -> Settings {
    Settings {
        data_dir: Some("/tmp/x".into()),
        ..Settings::default()
    }
}

#[test]
fn the_upstream_key_file_must_be_private_and_the_key_never_prints() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("key");
    std::fs::write(&f, "sk-ant-secret-9876\n").unwrap();
    let with = |path: &std::path::Path| {
        Settings {
            upstream_key_file: Some(path.to_path_buf()),
            ..s()
        }
        .validate()
    };
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = with(&f).unwrap_err().to_string();
    assert!(
        e.contains("--upstream-key-file") && e.contains("chmod 600"),
        "{e}"
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let c = with(&f).unwrap();
    assert_eq!(
        c.upstream_key.as_ref().map(|(k, s)| (k.expose(), *s)),
        Some(("sk-ant-secret-9876", KeySource::File))
    );
    let shown = format!("{c:?}");
    assert!(
        !shown.contains("secret-9876") && shown.contains("…9876"),
        "{shown}"
    );
    let missing = with(&dir.path().join("nope")).unwrap_err().to_string();
    assert!(missing.contains("cannot read"), "{missing}");
    let spaced = Settings {
        upstream_key: Some(Secret::new("sk ant".into())),
        ..s()
    };
    assert_eq!(
        spaced.validate().unwrap_err(),
        ConfigError::BadKey(BadKey::Malformed)
    );
}

#[test]
fn a_database_url_is_shown_without_its_password() {
    let shown = redact_database("postgres://agent:s3cret@db.internal:5432/budgets");
    assert!(
        !shown.contains("s3cret") && shown.contains("agent") && shown.contains("db.internal"),
        "{shown}"
    );
    assert_eq!(redact_database("postgres://db/x"), "postgres://db/x");
}

#[test]
fn an_upstream_key_is_trimmed_printable_and_not_a_virtual_key() {
    assert_eq!(
        parse_upstream_key(" sk-ant-api03-x\n").map(|k| k.expose().to_string()),
        Ok("sk-ant-api03-x".into())
    );
    for bad in ["", "  \n", "sk-ant é", "sk\u{7}ant"] {
        assert_eq!(
            parse_upstream_key(bad).err(),
            Some(BadKey::Malformed),
            "{bad:?}"
        );
    }
    let e = parse_upstream_key("sk-ab-0123").unwrap_err();
    assert_eq!(e, BadKey::Virtual);
    assert!(e.to_string().contains("sk-ant-"), "{e}");
}

#[test]
fn defaults_follow_the_contract() {
    let c = s().validate().unwrap();
    assert_eq!(
        (c.host.to_string(), c.port, c.upstream.as_str()),
        ("127.0.0.1".into(), 4727, "https://api.anthropic.com")
    );
    assert_eq!(
        (
            c.retention_days,
            c.upstream_timeout.as_secs(),
            c.shutdown_grace.as_secs()
        ),
        (90, 600, 30)
    );
}

#[test]
fn each_bad_setting_is_named() {
    let bad = [
        (
            Settings {
                host: Some("nope".into()),
                ..s()
            },
            "--host",
        ),
        (
            Settings {
                host: Some("0.0.0.0".into()),
                open_admin: true,
                ..s()
            },
            "--open-admin",
        ),
        (
            Settings {
                upstream: Some("ftp://x".into()),
                ..s()
            },
            "--upstream",
        ),
        (
            Settings {
                admin_token: Some("short".into()),
                ..s()
            },
            "--admin-token",
        ),
        (
            Settings {
                retention_days: Some(0),
                ..s()
            },
            "--retention-days",
        ),
        (
            Settings {
                shutdown_grace_secs: Some(3601),
                ..s()
            },
            "--shutdown-grace",
        ),
        (
            Settings {
                upstream_timeout_secs: Some(0),
                ..s()
            },
            "--upstream-timeout",
        ),
        (
            Settings {
                time_zone: Some("Mars/Olympus".into()),
                ..s()
            },
            "--time-zone",
        ),
        (
            Settings {
                allowed_hosts: vec!["a b".into()],
                ..s()
            },
            "--allowed-host",
        ),
        (
            Settings {
                database: Some("mysql://x".into()),
                ..s()
            },
            "--database",
        ),
        (
            Settings {
                database: Some("postgres://h:notaport/db".into()),
                ..s()
            },
            "--database",
        ),
        (
            Settings {
                lease_secs: Some(0),
                ..s()
            },
            "--lease-secs",
        ),
    ];
    for (settings, flag) in bad {
        let msg = settings.validate().unwrap_err().to_string();
        assert!(msg.contains(flag), "{msg}");
    }
    let open = Settings {
        host: Some("0.0.0.0".into()),
        admin_token: Some("0123456789abcdef".into()),
        ..s()
    };
    assert!(open.validate().is_ok());
}

#[test]
fn subscription_alerts_are_percentages_or_none() {
    let with = |a: &str| {
        Settings {
            subscription_alerts: Some(a.into()),
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        }
        .validate()
    };
    let alerts = |a: &str| with(a).map(|c| c.subscription_alerts);
    assert_eq!(
        Settings {
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        }
        .validate()
        .unwrap()
        .subscription_alerts,
        vec![80, 95]
    );
    assert_eq!(alerts("95, 50,95").unwrap(), vec![50, 95]);
    assert_eq!(alerts("none").unwrap(), Vec::<u8>::new());
    for bad in ["0", "101", "80;95", "eighty", "-5"] {
        assert!(
            matches!(with(bad), Err(ConfigError::SubscriptionAlerts(_))),
            "{bad}"
        );
    }
    let hook = |w: &str| {
        Settings {
            subscription_webhook: Some(w.into()),
            data_dir: Some("/tmp/x".into()),
            ..Settings::default()
        }
        .validate()
    };
    assert!(matches!(
        hook("ftp://x"),
        Err(ConfigError::SubscriptionWebhook(_))
    ));
    assert_eq!(
        hook("https://hooks.example/x")
            .unwrap()
            .subscription_webhook
            .as_deref(),
        Some("https://hooks.example/x")
    );
}
