//! Secrets kept in the data directory (the webhook signing secret, the admin token): read if
//! the file holds a usable one, else 64 random lowercase hex characters written with mode 0600.

use std::path::Path;

/// 32 random bytes as 64 lowercase hex characters.
pub fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The secret in `path` if `usable` accepts it (trimmed), else a new one written there.
pub fn load_or_create(path: &Path, usable: impl Fn(&str) -> bool) -> std::io::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if usable(s.trim()) {
            return Ok(s.trim().to_string());
        }
    }
    let secret = random_hex()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    std::io::Write::write_all(&mut options.open(path)?, secret.as_bytes())?;
    Ok(secret)
}
