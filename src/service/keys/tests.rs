use super::*;
use axum::http::HeaderValue;
use std::collections::HashMap;

fn active(key: &str, id: i64, budget_id: i64, lineage: Option<&str>) -> store::keys::Active {
    store::keys::Active {
        hash: hash(key),
        id,
        budget_id,
        lineage: lineage.map(str::to_string),
    }
}

/// What a lookup found: (key id, budget id, lineage).
fn found(keys: &Keys, key: &str) -> Option<(i64, i64, String)> {
    keys.budget_of(key, 1)
        .map(|k| (k.id, k.budget_id, k.lineage.to_string()))
}

#[test]
fn a_key_is_found_by_its_hash_only_with_its_lineage() {
    let keys = Keys::load(vec![
        active("sk-ab-1", 7, 3, None),
        active("sk-ab-2", 8, 3, Some("first")),
    ]);
    assert_eq!(found(&keys, "sk-ab-1"), Some((7, 3, hash("sk-ab-1"))));
    assert_eq!(
        found(&keys, "sk-ab-2"),
        Some((8, 3, "first".to_string())),
        "a refreshed sign-in's token names its first"
    );
    assert_eq!(found(&keys, "sk-ab-3"), None);
    keys.forget_budget(3);
    assert_eq!(found(&keys, "sk-ab-1"), None);
}

#[test]
fn a_use_is_unsaved_until_marked_and_never_goes_back_in_time() {
    let keys = Keys::load(vec![
        active("sk-ab-1", 7, 3, None),
        active("sk-ab-2", 8, 4, None),
    ]);
    assert!(keys.unsaved().is_empty() && keys.uses(3).is_empty());
    keys.budget_of("sk-ab-1", 20);
    keys.budget_of("sk-ab-1", 10); // a request whose clock read came first
    assert_eq!(keys.unsaved(), [(7, 20)]);
    assert_eq!(keys.uses(3), HashMap::from([(7, 20)]));
    assert!(keys.uses(4).is_empty());
    keys.mark_saved(&[(7, 20)]);
    assert!(keys.unsaved().is_empty());
    keys.budget_of("sk-ab-1", 30);
    assert_eq!(
        keys.remove(&hash("sk-ab-1")),
        Some((7, 30)),
        "a revoked key's last use"
    );
    assert_eq!(keys.remove(&hash("sk-ab-2")), None, "never used");
}

#[test]
fn credentials_come_from_every_x_api_key_and_bearer_token() {
    let mut h = HeaderMap::new();
    let all = |h: &HeaderMap| credentials(h).map(str::to_string).collect::<Vec<_>>();
    h.insert("authorization", HeaderValue::from_static("bearer sk-ab-x"));
    assert_eq!(all(&h), ["sk-ab-x"]);
    h.insert("x-api-key", HeaderValue::from_static("sk-ant-y"));
    assert_eq!(all(&h), ["sk-ant-y", "sk-ab-x"]);
    h.append("x-api-key", HeaderValue::from_static("z"));
    assert_eq!(all(&h).len(), 3);
    assert!(carries_virtual_key(b"Basic sk-ab-123"));
    assert!(!carries_virtual_key(b"sk-ant-api03"));
}
