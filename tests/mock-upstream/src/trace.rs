//! A simulated Claude Code session, for admission's test and benchmark: a main agent and waves
//! of parallel subagents on Opus 4.8. Every turn is a streamed request with Claude Code's
//! `max_tokens` (32,000) and a prompt that grows turn by turn behind a cached prefix (the
//! system prompt and tool definitions, ~16K tokens); the mock answers with the usage such a
//! turn reports (most of the prompt read from cache, the new part written to it) and an output
//! length drawn from what agent turns produce (mostly short tool calls, some long edits).
//! The same seed gives the same session, so admission modes are compared on one trace.

use serde_json::{Value, json};

pub const MODEL: &str = "claude-opus-4-8";
pub const MAX_TOKENS: u64 = 32_000;
/// System prompt and tool definitions, cached once and read by every turn of every agent.
const SYSTEM_TOKENS: u64 = 16_000;

/// One request of an agent.
#[derive(Clone, Debug)]
pub struct Turn {
    /// The whole prompt, in tokens: cached prefix + what this turn adds.
    pub prompt: u64,
    /// Tokens read from the cache (the previous turn's prompt).
    pub cached: u64,
    /// Output the model would produce given room.
    pub output: u64,
}

#[derive(Clone, Debug, Default)]
pub struct Agent {
    pub turns: Vec<Turn>,
}

/// The main agent runs throughout; each wave of subagents runs in parallel beside it, one wave
/// after another.
#[derive(Clone, Debug)]
pub struct Session {
    pub main: Agent,
    pub waves: Vec<Vec<Agent>>,
}

/// xorshift64*: small, seeded, the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    /// An agent turn's output: 70 % tool calls, 25 % explanations, 5 % long code edits.
    fn output(&mut self) -> u64 {
        match self.next() % 100 {
            0..70 => self.range(40, 400),
            70..95 => self.range(400, 2_000),
            _ => self.range(2_000, 9_000),
        }
    }
}

fn agent(rng: &mut Rng, start: u64, turns: usize) -> Agent {
    let mut prompt = SYSTEM_TOKENS + start;
    let mut cached = SYSTEM_TOKENS;
    let mut out = Vec::with_capacity(turns);
    for _ in 0..turns {
        let t = Turn {
            prompt,
            cached,
            output: rng.output(),
        };
        // The next turn adds this turn's output and a tool result to the conversation.
        cached = prompt;
        prompt += t.output + rng.range(200, 3_000);
        out.push(t);
    }
    Agent { turns: out }
}

/// A session: the main agent's `main_turns`, and `waves` waves of `width` subagents each
/// running `sub_turns` turns.
pub fn session(
    seed: u64,
    main_turns: usize,
    waves: usize,
    width: usize,
    sub_turns: usize,
) -> Session {
    let mut rng = Rng(seed.max(1));
    Session {
        main: agent(&mut rng, 4_000, main_turns),
        waves: (0..waves)
            .map(|_| {
                (0..width)
                    .map(|_| agent(&mut rng, 1_500, sub_turns))
                    .collect()
            })
            .collect(),
    }
}

impl Session {
    pub fn requests(&self) -> usize {
        self.main.turns.len()
            + self
                .waves
                .iter()
                .flatten()
                .map(|a| a.turns.len())
                .sum::<usize>()
    }
}

/// About `tokens` tokens of code and prose, as a prompt is made of (~4 characters a token).
fn filler(tokens: u64, salt: u64) -> String {
    const LINES: [&str; 4] = [
        "fn settle(reservation: Reservation, cost: Money) -> Result<Settled, Error> { ",
        "The function reads the file, checks the budget and returns the parsed usage. ",
        "    let total = items.iter().map(|i| i.price * i.count).sum::<u64>(); ",
        "{\"type\": \"tool_result\", \"content\": \"src/proxy/mod.rs:120: ok\"} ",
    ];
    let mut s = String::with_capacity(tokens as usize * 4 + 80);
    let mut i = salt as usize;
    while (s.len() as u64) < tokens * 4 {
        s.push_str(LINES[i % LINES.len()]);
        i += 1;
    }
    s
}

impl Turn {
    /// The request body, shaped as Claude Code sends it: an attribution block, the cached
    /// system prompt, the conversation with a breakpoint on its last message.
    pub fn body(&self) -> Vec<u8> {
        let conversation = self.prompt.saturating_sub(SYSTEM_TOKENS);
        json!({
            "model": MODEL, "max_tokens": MAX_TOKENS, "stream": true,
            "system": [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1"},
                {"type": "text", "text": filler(SYSTEM_TOKENS, 0), "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": filler(conversation, self.prompt), "cache_control": {"type": "ephemeral"}}
            ]}],
            "metadata": {"user_id": "user_trace_session"}
        })
        .to_string()
        .into_bytes()
    }

    /// The mock's script: the usage this turn reports, stopping at `max_tokens` as the API does.
    /// `late_usage` holds usage back to the end of the stream (no early input for the proxy).
    pub fn script(&self, late_usage: bool) -> Value {
        let written = self.prompt - self.cached;
        json!({
            "usage": {
                "input_tokens": written.min(40),
                "cache_creation_input_tokens": written.saturating_sub(40),
                "cache_read_input_tokens": self.cached,
                "output_tokens": self.output,
            },
            "stop_at_max_tokens": true,
            "late_usage": late_usage,
            "text": "Reading the file and running the tests now.",
            "chunk_delay_ms": 2,
        })
    }
}

/// What a session met through the proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub forwarded: u64,
    pub blocked: u64,
    /// Forwarded with a lower `max_tokens` (`x-agent-budget-clamped-max-tokens`).
    pub clamped: u64,
    /// Clamped requests whose output then stopped at the lower limit.
    pub truncated: u64,
    /// Turns never sent because their agent had been blocked (Claude Code stops the agent).
    pub lost: u64,
}

impl Tally {
    fn add(&mut self, o: &Tally) {
        self.forwarded += o.forwarded;
        self.blocked += o.blocked;
        self.clamped += o.clamped;
        self.truncated += o.truncated;
        self.lost += o.lost;
    }
}

/// Runs one agent's turns in order through the proxy at `url` (…/agent-budget); a blocked
/// turn stops the agent.
async fn run_agent(
    client: &reqwest::Client,
    url: &str,
    budget: &str,
    a: &Agent,
    late: bool,
) -> Tally {
    let mut t = Tally::default();
    for (i, turn) in a.turns.iter().enumerate() {
        let sent = client
            .post(format!("{url}/v1/messages"))
            .header("content-type", "application/json")
            .header("x-api-key", "sk-trace")
            .header("anthropic-version", "2023-06-01")
            .header("x-budget-id", budget)
            .header("x-mock", turn.script(late).to_string())
            .body(turn.body())
            .send()
            .await;
        let Ok(r) = sent else {
            t.lost += (a.turns.len() - i) as u64;
            return t;
        };
        if r.status() == 429 {
            t.blocked += 1;
            t.lost += (a.turns.len() - i - 1) as u64;
            return t;
        }
        let clamped = r
            .headers()
            .contains_key("x-agent-budget-clamped-max-tokens");
        let text = r.text().await.unwrap_or_default();
        t.forwarded += 1;
        if clamped {
            t.clamped += 1;
            t.truncated += u64::from(text.contains("\"stop_reason\":\"max_tokens\""));
        }
    }
    t
}

/// Runs a session: the main agent beside each wave of subagents in turn.
pub async fn run(
    client: &reqwest::Client,
    url: &str,
    budget: &str,
    s: &Session,
    late: bool,
) -> Tally {
    let main = run_agent(client, url, budget, &s.main, late);
    let subagents = async {
        let mut t = Tally::default();
        for wave in &s.waves {
            let done = futures_util::future::join_all(
                wave.iter().map(|a| run_agent(client, url, budget, a, late)),
            )
            .await;
            done.iter().for_each(|d| t.add(d));
        }
        t
    };
    let (mut total, sub) = futures_util::future::join(main, subagents).await;
    total.add(&sub);
    total
}

/// How admission is set up for a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `admission: "strict"`, usage only at the end of each stream: the reservation stays the
    /// worst case until the response settles (admission before early input).
    StrictLate,
    /// `admission: "strict"`, usage in `message_start` as the API sends it.
    Strict,
    /// `admission: "clamp"`, usage in `message_start`.
    Clamp,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::StrictLate, Mode::Strict, Mode::Clamp];
    pub fn label(self) -> &'static str {
        match self {
            Mode::StrictLate => "strict, no early input",
            Mode::Strict => "strict + early input",
            Mode::Clamp => "clamp + early input",
        }
    }
}

/// One session against one fresh `total` budget.
#[derive(Clone, Debug)]
pub struct Run {
    pub tally: Tally,
    /// The budget's `spent_dollars` and `reserved_dollars` afterwards, as the API says.
    pub spent: String,
    pub reserved: String,
    /// The sum of its usage records' `cost_dollars`, as decimal strings to be added exactly.
    pub costs: Vec<String>,
}

async fn json(r: reqwest::Result<reqwest::Response>) -> Value {
    match r {
        Ok(r) => {
            serde_json::from_slice(&r.bytes().await.unwrap_or_default()).unwrap_or(Value::Null)
        }
        Err(_) => Value::Null,
    }
}

/// Creates budget `name` with cap `cap` in `mode` on the proxy at `url` and runs `s` against it.
pub async fn measure(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    cap: &str,
    mode: Mode,
    s: &Session,
) -> Run {
    let admission = if mode == Mode::Clamp {
        "clamp"
    } else {
        "strict"
    };
    let spec = json!({"name": name, "max_dollars": cap, "admission": admission});
    let _ = client
        .post(format!("{url}/api/budgets"))
        .header("content-type", "application/json")
        .body(spec.to_string())
        .send()
        .await;
    let tally = run(client, url, name, s, mode == Mode::StrictLate).await;
    let b = json(client.get(format!("{url}/api/budgets/{name}")).send().await).await;
    let mut costs = Vec::new();
    let mut offset = 0;
    loop {
        let page = json(
            client
                .get(format!(
                    "{url}/api/budgets/{name}/usage?limit=500&offset={offset}"
                ))
                .send()
                .await,
        )
        .await;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        costs.extend(
            items
                .iter()
                .filter_map(|r| r["cost_dollars"].as_str().map(str::to_string)),
        );
        offset += items.len();
        if items.len() < 500 {
            break;
        }
    }
    Run {
        tally,
        spent: b["spent_dollars"].as_str().unwrap_or_default().to_string(),
        reserved: b["reserved_dollars"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        costs,
    }
}
