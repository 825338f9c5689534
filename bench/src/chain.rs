//! `--chain`: admission through a budget with two ancestors (three scopes reserved and settled
//! at once) against a budget alone, on the same proxy, interleaved. Printed.

use super::{Bench, Report, latency_row, load, procs};
use anyhow::Result;

pub async fn run(r: &mut Report, b: &Bench) -> Result<()> {
    let api = b.proxied.replace("/v1/messages", "/api");
    let make = |body: &'static str| {
        b.client
            .post(format!("{api}/budgets"))
            .bearer_auth(procs::ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for body in [
        r#"{"name":"single","max_dollars":"1000000","period":"monthly"}"#,
        r#"{"name":"top","max_dollars":"1000000","period":"monthly"}"#,
        r#"{"name":"mid","max_dollars":"1000000","period":"weekly","parent":"top"}"#,
        r#"{"name":"leaf","max_dollars":"1000000","period":"daily","parent":"mid"}"#,
    ] {
        let made = make(body).await?;
        anyhow::ensure!(made.status().is_success(), "{}", made.text().await?);
    }
    let url = |budget: &str| {
        b.proxied
            .replace("/v1/messages", &format!("/b/{budget}/v1/messages"))
    };
    let secs = b.plan.secs;
    for round in 1..=2 {
        for (label, budget) in [("one scope", "single"), ("three scopes", "leaf")] {
            let target = url(budget);
            let (d, p) = load::rate_pair(&b.client, &b.direct, &target, 2000, secs, true).await;
            r.line(latency_row(
                &format!("2000 req/s, {label} (round {round})"),
                d.latency,
                p.latency,
                p.errors,
            ));
            let pid = b.proxy.child.id();
            let s = load::saturate_pair(&b.client, &b.direct, &target, pid, secs).await;
            r.line(format!(
                "CPU per request, {label} (round {round}): {:.1} µs (ratio {:.2})",
                s.via_cpu_us,
                s.via / s.direct
            ));
        }
    }
    Ok(())
}
