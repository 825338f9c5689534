//! The `sessions` and `session_agents` roll-ups: spend per agent session and model, and per
//! agent of a session, written once per key at the end of each of the writer's transactions;
//! read a page of sessions at a time, with their agents and telemetry.

use super::StoreError;
use super::tally::{ADD_UP, COLUMNS, Groups};
use crate::budget::period::{self, Zone};
use crate::money::Money;
use crate::record::{AgentSpend, SessionView, UsageRow};
use rusqlite::{Connection, Transaction, params};

/// What a transaction's rows add to `sessions` and `session_agents`.
#[derive(Default)]
pub(super) struct RollUp {
    models: Groups<(i64, String, String)>,
    agents: Groups<AgentKey>,
}

struct AgentKey {
    budget_id: i64,
    session: String,
    /// '' for the main agent.
    agent_id: String,
    agent_type: Option<String>,
    parent_agent_id: Option<String>,
}

impl RollUp {
    pub(super) fn add(&mut self, r: &UsageRow) {
        let Some(session) = r.session.as_deref() else {
            return;
        };
        self.models.add(
            r,
            |(b, s, m)| *b == r.budget_id && s == session && *m == r.model,
            || (r.budget_id, session.to_string(), r.model.clone()),
        );
        let a = &r.attribution;
        let agent = a.agent_id.as_deref().unwrap_or("");
        self.agents.add(
            r,
            |k| k.budget_id == r.budget_id && k.session == session && k.agent_id == agent,
            || AgentKey {
                budget_id: r.budget_id,
                session: session.to_string(),
                agent_id: agent.to_string(),
                agent_type: a.agent_type.clone(),
                parent_agent_id: a.parent_agent_id.clone(),
            },
        );
    }

    pub(super) fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        if self.models.is_empty() {
            return Ok(());
        }
        let mut up = tx.prepare_cached(&format!(
            "INSERT INTO sessions (budget_id, session, model, {COLUMNS})
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?1)
             ON CONFLICT (budget_id, session, model) DO UPDATE SET {ADD_UP}"
        ))?;
        for ((budget, session, model), t) in self.models.iter() {
            t.upsert(&mut up, &[budget, session, model])?;
        }
        let mut up = tx.prepare_cached(&format!(
            "INSERT INTO session_agents (budget_id, session, agent_id, agent_type, parent_agent_id, {COLUMNS})
             SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11 WHERE EXISTS (SELECT 1 FROM budgets WHERE id = ?1)
             ON CONFLICT (budget_id, session, agent_id) DO UPDATE SET
                agent_type = coalesce(agent_type, excluded.agent_type),
                parent_agent_id = coalesce(parent_agent_id, excluded.parent_agent_id), {ADD_UP}"
        ))?;
        for (k, t) in self.agents.iter() {
            let key: [&dyn rusqlite::ToSql; 5] = [
                &k.budget_id,
                &k.session,
                &k.agent_id,
                &k.agent_type,
                &k.parent_agent_id,
            ];
            t.upsert(&mut up, &key)?;
        }
        Ok(())
    }
}

fn count(v: i64) -> u64 {
    v.max(0) as u64
}

/// A page of a budget's sessions, most recently seen first, and how many it has.
pub fn page(
    conn: &Connection,
    budget_id: i64,
    limit: u32,
    offset: u64,
    zone: Zone,
) -> Result<(Vec<SessionView>, u64), StoreError> {
    let total: i64 = conn
        .prepare_cached("SELECT COUNT(DISTINCT session) FROM sessions WHERE budget_id = ?1")?
        .query_row([budget_id], |r| r.get(0))?;
    let mut stmt = conn.prepare_cached(
        "SELECT session, ssum(dollars), ssum(requests), ssum(blocked), ssum(tokens), MIN(first_seen),
                MAX(last_seen), group_concat(model, char(10))
         FROM sessions WHERE budget_id = ?1 GROUP BY session
         ORDER BY MAX(last_seen) DESC, session LIMIT ?2 OFFSET ?3",
    )?;
    let mut items = stmt
        .query_map(
            params![budget_id, limit, i64::try_from(offset).unwrap_or(i64::MAX)],
            |r| {
                let mut models: Vec<String> = r
                    .get::<_, String>(7)?
                    .split('\n')
                    .map(str::to_string)
                    .collect();
                models.sort();
                Ok(SessionView {
                    session: r.get(0)?,
                    spent_dollars: Money::from_picos(r.get(1)?),
                    requests: count(r.get(2)?),
                    blocked: count(r.get(3)?),
                    tokens: count(r.get(4)?),
                    first_seen: zone.render(period::from_millis(r.get(5)?)),
                    last_seen: zone.render(period::from_millis(r.get(6)?)),
                    models,
                    agents: Vec::new(),
                    activity: None,
                    period_dollars: None,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    for s in &mut items {
        s.agents = agents(conn, budget_id, &s.session)?;
        s.activity = super::activity::of(conn, budget_id, &s.session)?;
    }
    Ok((items, count(total)))
}

/// A session's agents, the most spent first (the main agent has no id).
fn agents(conn: &Connection, budget_id: i64, session: &str) -> Result<Vec<AgentSpend>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT agent_id, agent_type, parent_agent_id, dollars, requests FROM session_agents
         WHERE budget_id = ?1 AND session = ?2 ORDER BY dollars DESC, agent_id LIMIT 100",
    )?;
    let rows = stmt.query_map(params![budget_id, session], |r| {
        Ok(AgentSpend {
            agent_id: Some(r.get::<_, String>(0)?).filter(|a| !a.is_empty()),
            agent_type: r.get(1)?,
            parent_agent_id: r.get(2)?,
            spent_dollars: Money::from_picos(r.get(3)?),
            requests: count(r.get(4)?),
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
