use super::*;
use axum::http::HeaderValue;
use std::collections::HashMap;

#[test]
fn a_key_is_found_by_its_hash_only() {
    let keys = Keys::load(vec![(hash("sk-ab-1"), 7, 3)]);
    assert_eq!(keys.budget_of("sk-ab-1", 1), Some((7, 3)));
    assert_eq!(keys.budget_of("sk-ab-2", 1), None);
    keys.forget_budget(3);
    assert_eq!(keys.budget_of("sk-ab-1", 1), None);
}

#[test]
fn a_use_is_unsaved_until_marked_and_never_goes_back_in_time() {
    let keys = Keys::load(vec![(hash("sk-ab-1"), 7, 3), (hash("sk-ab-2"), 8, 4)]);
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
