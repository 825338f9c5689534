//! Desktop preferences that outlive the process — whether notifications are paused, and the
//! team database — in `<app config dir>/preferences.json` (mode 0600: the database URL may
//! carry a password). Launch at login lives in the autostart entry itself.

use serde::{Deserialize, Serialize};
use std::path::Path;

const FILE: &str = "preferences.json";

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prefs {
    #[serde(default)]
    pub notifications_muted: bool,
    /// `postgres://…`: the proxy enforces budgets together with the others on it.
    #[serde(default)]
    pub database: Option<String>,
}

/// The saved preferences; defaults if there are none or they cannot be read (said in the log).
pub fn load(dir: &Path) -> Prefs {
    let path = dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "preferences unreadable; using defaults");
            Prefs::default()
        }),
        Err(_) => Prefs::default(),
    }
}

/// Saves them whole (written beside, then renamed, so a crash leaves the old or the new file).
pub fn save(dir: &Path, prefs: &Prefs) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(prefs)?)?;
    #[cfg(unix)]
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    std::fs::rename(tmp, dir.join(FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_preferences_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("not-yet-created");
        assert_eq!(load(&nested), Prefs::default());
        let muted = Prefs {
            notifications_muted: true,
            database: Some("postgres://a:secret@db/x".into()),
        };
        save(&nested, &muted).unwrap();
        assert_eq!(load(&nested), muted);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(nested.join(FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        save(&nested, &Prefs::default()).unwrap();
        assert_eq!(load(&nested), Prefs::default());
    }

    #[test]
    fn an_unreadable_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert_eq!(load(dir.path()), Prefs::default());
    }
}
