//! `agent-budget claude-code setup`: Claude Code's user settings (`~/.claude/settings.json`)
//! pointed at this gateway, so that its `/login` signs in here (docs/claude-code.md), with its
//! metrics on so the budget page shows what each session did (they go to the gateway it is
//! signed in to, nowhere else). Every other setting is kept, and an `env` value the user set
//! wins; the file before the change is kept beside it.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

const METHOD: &str = "forceLoginMethod";
const URL: &str = "forceLoginGatewayUrl";
/// Claude Code's metrics, over OTLP/HTTP: signed in to a gateway, it sends them there.
const TELEMETRY: [(&str, &str); 3] = [
    ("CLAUDE_CODE_ENABLE_TELEMETRY", "1"),
    ("OTEL_METRICS_EXPORTER", "otlp"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
];

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(
        "{0} is not a JSON object (or its \"env\" is not one); fix it or move it away, then run this again"
    )]
    NotAnObject(PathBuf),
    #[error(
        "{path} already signs Claude Code in to another gateway ({other}); pass --force to point it at {wanted} instead"
    )]
    OtherGateway {
        path: PathBuf,
        other: String,
        wanted: String,
    },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// What `point_at` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Setup {
    /// The settings already pointed there.
    Unchanged,
    /// Written; the earlier file is kept at `backup`, if there was one.
    Written { backup: Option<PathBuf> },
}

/// Claude Code's user settings file in `home`.
pub fn settings_file(home: &Path) -> PathBuf {
    home.join(".claude").join("settings.json")
}

/// Points the settings at `gateway` (the base URL Claude Code signs in to), keeping every
/// other setting. Refuses to replace another gateway unless `force`.
pub fn point_at(path: &Path, gateway: &str, force: bool) -> Result<Setup, SetupError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(SetupError::Read(path.to_path_buf(), e)),
    };
    let mut settings: Map<String, Value> = match text.as_deref().map(str::trim) {
        None | Some("") => Map::new(),
        Some(t) => match serde_json::from_str(t) {
            Ok(Value::Object(m)) => m,
            _ => return Err(SetupError::NotAnObject(path.to_path_buf())),
        },
    };
    let current = settings.get(URL).and_then(Value::as_str);
    let env = match settings.get("env") {
        None => Map::new(),
        Some(Value::Object(env)) => env.clone(),
        Some(_) => return Err(SetupError::NotAnObject(path.to_path_buf())),
    };
    let missing: Vec<_> = TELEMETRY
        .iter()
        .filter(|(k, _)| !env.contains_key(*k))
        .collect();
    if settings.get(METHOD).and_then(Value::as_str) == Some("gateway")
        && current == Some(gateway)
        && missing.is_empty()
    {
        return Ok(Setup::Unchanged);
    }
    if let Some(other) = current.filter(|c| *c != gateway && !force) {
        return Err(SetupError::OtherGateway {
            path: path.to_path_buf(),
            other: other.to_string(),
            wanted: gateway.to_string(),
        });
    }
    settings.insert(METHOD.into(), Value::String("gateway".into()));
    settings.insert(URL.into(), Value::String(gateway.into()));
    let mut env = env;
    for (k, v) in missing {
        env.insert((*k).into(), Value::String((*v).into()));
    }
    settings.insert("env".into(), Value::Object(env));
    let write = |p: &Path, body: &str| {
        std::fs::write(p, body).map_err(|e| SetupError::Write(p.to_path_buf(), e))
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| SetupError::Write(dir.to_path_buf(), e))?;
    }
    let backup = match &text {
        Some(old) => {
            let b = path.with_extension("json.before-agent-budget");
            write(&b, old)?;
            Some(b)
        }
        None => None,
    };
    let body = serde_json::to_string_pretty(&Value::Object(settings)).unwrap_or_default();
    // Written beside and renamed over, so Claude Code never reads half a file.
    let fresh = path.with_extension("json.agent-budget-new");
    write(&fresh, &format!("{body}\n"))?;
    std::fs::rename(&fresh, path).map_err(|e| SetupError::Write(path.to_path_buf(), e))?;
    Ok(Setup::Written { backup })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: &str = "http://localhost:4727/agent-budget";

    #[test]
    fn settings_are_pointed_once_kept_backed_up_and_another_gateway_needs_force() {
        let dir = tempfile::tempdir().unwrap();
        let path = settings_file(dir.path());
        assert_eq!(
            point_at(&path, GW, false).unwrap(),
            Setup::Written { backup: None }
        );
        std::fs::write(
            &path,
            r#"{"model": "opus", "forceLoginMethod": "claudeai", "env": {"OTEL_METRICS_EXPORTER": "console"}}"#,
        )
        .unwrap();
        let Setup::Written { backup: Some(b) } = point_at(&path, GW, false).unwrap() else {
            panic!("a backup of the earlier file");
        };
        assert!(std::fs::read_to_string(b).unwrap().contains("claudeai"));
        let now: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(now["model"], "opus", "other settings are kept");
        assert_eq!(now["env"]["CLAUDE_CODE_ENABLE_TELEMETRY"], "1");
        assert_eq!(now["env"]["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/protobuf");
        assert_eq!(
            now["env"]["OTEL_METRICS_EXPORTER"], "console",
            "the user's own value wins"
        );
        assert_eq!(
            (&now[METHOD], &now[URL]),
            (&Value::from("gateway"), &Value::from(GW))
        );
        assert_eq!(
            point_at(&path, GW, false).unwrap(),
            Setup::Unchanged,
            "idempotent"
        );
        let other = "https://gw.example.com";
        assert!(matches!(
            point_at(&path, other, false),
            Err(SetupError::OtherGateway { .. })
        ));
        assert!(matches!(
            point_at(&path, other, true),
            Ok(Setup::Written { .. })
        ));
        std::fs::write(&path, r#"{"env": "x"}"#).unwrap();
        assert!(matches!(
            point_at(&path, GW, false),
            Err(SetupError::NotAnObject(_))
        ));
        std::fs::write(&path, "[1, 2]").unwrap();
        assert!(matches!(
            point_at(&path, GW, false),
            Err(SetupError::NotAnObject(_))
        ));
    }
}
