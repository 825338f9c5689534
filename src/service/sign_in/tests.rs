use super::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[test]
fn user_codes_are_base_20_in_two_groups_of_four() {
    let c = user_code(&[0, 1, 2, 3, 19, 20, 39, 250, 59]);
    assert_eq!(
        c, "BCDF-ZBZZ",
        "250 is skipped: no letter comes up more often"
    );
    assert!(
        c.chars()
            .filter(|c| *c != '-')
            .all(|c| CODE_CHARS.contains(&(c as u8)))
    );
    assert_eq!(normalise(" bcdf-zbzp "), "BCDFZBZP");
}

#[test]
fn the_token_prefix_is_the_encoded_header() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT","kid":"agent-budget"}"#);
    assert_eq!(format!("{header}."), TOKEN_PREFIX);
    let exp = serde_json::json!({"exp": 1_800_000_000}).to_string();
    let token = format!("{TOKEN_PREFIX}{}.sig", URL_SAFE_NO_PAD.encode(exp));
    assert_eq!(token_expiry(&token), Some(1_800_000_000));
    assert_eq!(token_expiry("eyJother.x.y"), None);
}
