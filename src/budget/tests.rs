use super::*;

/// Budgets that stand alone: every parent refused.
struct TopLevel;

impl Parents for TopLevel {
    fn resolve(&self, _: &BudgetRef) -> Result<i64, Invalid> {
        Err(invalid("parent", "names no budget"))
    }
}

/// Every parent is budget 7.
struct Seven;
impl Parents for Seven {
    fn resolve(&self, _: &BudgetRef) -> Result<i64, Invalid> {
        Ok(7)
    }
}

fn new(json: &str) -> Result<Budget, Invalid> {
    serde_json::from_str::<NewBudget>(json)
        .unwrap()
        .validate(Utc::now(), &Seven)
}

#[test]
fn a_budget_with_a_parent_may_go_without_a_cap_and_only_then() {
    let b = new(r#"{"name":"a","parent":"team"}"#).unwrap();
    assert_eq!((b.parent, b.max_dollars), (Some(7), None));
    assert_eq!(new(r#"{"name":"a","parent":7}"#).unwrap().parent, Some(7));
    let patch: BudgetPatch = serde_json::from_str(r#"{"parent":null}"#).unwrap();
    assert_eq!(patch.apply(&b, &Seven).unwrap_err().field, "max_dollars");
    let patch: BudgetPatch = serde_json::from_str(r#"{"parent":null,"max_dollars":"5"}"#).unwrap();
    assert_eq!(patch.apply(&b, &Seven).unwrap().parent, None);
}

#[test]
fn names_follow_the_slug_rule() {
    for ok in ["a", "my-agents", "team_a1", &"x".repeat(64)] {
        assert!(check_name(ok).is_ok(), "{ok}");
    }
    for bad in ["", "1abc", "-a", "My", "a b", "ä", &"x".repeat(65), "a.b"] {
        assert_eq!(check_name(bad).unwrap_err().field, "name", "{bad}");
    }
}

#[test]
fn creation_validates_each_field_and_names_it() {
    let b = new(r#"{"name":"a","max_dollars":"25"}"#).unwrap();
    assert_eq!(
        (b.period, b.thresholds.as_slice(), b.max_tokens),
        (Period::Total, &[50u8, 80, 100][..], None)
    );
    for (json, field) in [
        (r#"{"name":"a"}"#, "max_dollars"),
        (r#"{"name":"a","max_dollars":null}"#, "max_dollars"),
        (r#"{"name":"a","max_dollars":0}"#, "max_dollars"),
        (r#"{"name":"a","max_dollars":"-5"}"#, "max_dollars"),
        (r#"{"name":"A","max_dollars":1}"#, "name"),
        (
            r#"{"name":"a","max_dollars":1,"max_tokens":0}"#,
            "max_tokens",
        ),
        (
            r#"{"name":"a","max_dollars":1,"webhook_url":"ftp://x"}"#,
            "webhook_url",
        ),
        (
            r#"{"name":"a","max_dollars":1,"webhook_url":"not a url"}"#,
            "webhook_url",
        ),
        (
            r#"{"name":"a","max_dollars":1,"webhook_url":"file:///etc/passwd"}"#,
            "webhook_url",
        ),
        (
            r#"{"name":"a","max_dollars":1,"webhook_url":"javascript:alert(1)"}"#,
            "webhook_url",
        ),
        (
            r#"{"name":"a","max_dollars":1,"webhook_url":"data:text/plain,x"}"#,
            "webhook_url",
        ),
        (
            r#"{"name":"a","max_dollars":1,"thresholds":[]}"#,
            "thresholds",
        ),
        (
            r#"{"name":"a","max_dollars":1,"thresholds":[50,50]}"#,
            "thresholds",
        ),
        (
            r#"{"name":"a","max_dollars":1,"thresholds":[0]}"#,
            "thresholds",
        ),
        (
            r#"{"name":"a","max_dollars":1,"thresholds":[101]}"#,
            "thresholds",
        ),
    ] {
        assert_eq!(new(json).unwrap_err().field, field, "{json}");
    }
    let sorted = new(r#"{"name":"a","max_dollars":1,"thresholds":[100,25]}"#).unwrap();
    assert_eq!(sorted.thresholds, vec![25, 100]);
}

#[test]
fn patch_distinguishes_null_from_absent_and_never_half_applies() {
    let b = new(
        r#"{"name":"a","max_dollars":"25","max_tokens":1000,"webhook_url":"https://x.test/h"}"#,
    )
    .unwrap();
    let patch = |json: &str| {
        serde_json::from_str::<BudgetPatch>(json)
            .unwrap()
            .apply(&b, &TopLevel)
    };
    let p = patch(r#"{"max_tokens":null}"#).unwrap();
    assert_eq!(
        (p.max_tokens, p.webhook_url.as_deref(), p.max_dollars),
        (None, Some("https://x.test/h"), b.max_dollars)
    );
    assert_eq!(
        patch(r#"{"max_dollars":null}"#).unwrap_err().field,
        "max_dollars"
    );
    assert_eq!(
        patch(r#"{"period":"daily","thresholds":[200]}"#)
            .unwrap_err()
            .field,
        "thresholds"
    );
    assert_eq!(
        patch(r#"{"period":"weekly"}"#).unwrap().period,
        Period::Weekly
    );
    assert!(serde_json::from_str::<BudgetPatch>(r#"{"name":"b"}"#).is_err());
    let mut d = b.clone();
    d.name = DEFAULT_BUDGET.into();
    let uncapped = serde_json::from_str::<BudgetPatch>(r#"{"max_dollars":null}"#)
        .unwrap()
        .apply(&d, &TopLevel)
        .unwrap();
    assert_eq!(uncapped.max_dollars, None);
}
