//! Model-id normalisation: dated, Bedrock and Vertex ids resolve to the family id the price
//! table is keyed by (`anthropic.claude-sonnet-4-5-20250929-v1:0` → `claude-sonnet-4-5`).

/// Returns the family id for a model id as sent by a client or echoed by the API.
/// Idempotent: a normalised id (the price table's key) normalises to itself.
pub fn normalise(id: &str) -> String {
    let mut s = strip(id);
    loop {
        let next = strip(&s);
        if next == s {
            return s;
        }
        s = next;
    }
}

/// One pass of the rules below; each pass only shortens the id.
fn strip(id: &str) -> String {
    let mut s = id.trim().to_ascii_lowercase();
    // Bedrock cross-region inference profiles: `us.anthropic.…`, `global.anthropic.…`.
    if let Some(pos) = s.find("anthropic.") {
        s.drain(..pos + "anthropic.".len());
    }
    // Vertex: `claude-haiku-4-5@20251001`.
    if let Some(at) = s.find('@') {
        s.truncate(at);
    }
    // Bedrock version suffix: `-v1:0`, `-v2`, `:0`.
    if let Some(colon) = s.rfind(':') {
        s.truncate(colon);
    }
    if let Some(v) = s.rfind("-v") {
        if s[v + 2..].bytes().all(|b| b.is_ascii_digit()) && s.len() > v + 2 {
            s.truncate(v);
        }
    }
    for suffix in ["-latest"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s.truncate(stripped.len());
        }
    }
    // Snapshot date: `-YYYYMMDD`.
    if let Some(dash) = s.rfind('-') {
        let tail = &s[dash + 1..];
        if tail.len() == 8 && tail.bytes().all(|b| b.is_ascii_digit()) {
            s.truncate(dash);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn normalising_twice_changes_nothing() {
        // Found by tests/properties: single passes left `::` as `:` and `x-v1-v2` as `x-v1`.
        for id in [
            "::",
            "x-v1-v2",
            "anthropic.anthropic.claude-opus-4-1",
            "a-20250101-20250102",
        ] {
            let once = normalise(id);
            assert_eq!(normalise(&once), once, "{id}");
        }
    }

    #[test]
    fn resolves_every_platform_spelling_to_its_family() {
        for (id, family) in [
            ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
            ("claude-sonnet-4-5", "claude-sonnet-4-5"),
            (
                "anthropic.claude-sonnet-4-5-20250929-v1:0",
                "claude-sonnet-4-5",
            ),
            (
                "us.anthropic.claude-opus-4-1-20250805-v1:0",
                "claude-opus-4-1",
            ),
            (
                "global.anthropic.claude-haiku-4-5-20251001-v1:0",
                "claude-haiku-4-5",
            ),
            ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),
            ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
            ("claude-3-haiku-20240307", "claude-3-haiku"),
            ("claude-opus-4-20250514", "claude-opus-4"),
            ("Claude-Opus-5", "claude-opus-5"),
            ("claude-fable-5-1", "claude-fable-5-1"),
            ("anthropic.claude-v2", "claude"),
            ("", ""),
        ] {
            assert_eq!(normalise(id), family, "{id}");
        }
    }
}
