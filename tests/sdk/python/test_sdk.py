"""The official Python SDK through the proxy to the mock upstream.

Needs AGENT_BUDGET_URL (the proxy's base URL, …/agent-budget) and MOCK_URL in the environment
(tests/sdk/run.sh sets them).
"""
import json
import os
import urllib.request

import anthropic
import pytest

PROXY = os.environ["AGENT_BUDGET_URL"]
MOCK = os.environ["MOCK_URL"]


def call(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"}
    # The admin token goes to the admin API only (never to a proxy route or the mock).
    if "/agent-budget/api/" in url:
        headers["authorization"] = "Bearer " + os.environ["AGENT_BUDGET_ADMIN_TOKEN"]
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req) as r:
        text = r.read()
        return json.loads(text) if text else None


def mock_stats():
    return call("GET", f"{MOCK}/_mock/stats")


@pytest.fixture(autouse=True)
def fresh_mock():
    call("POST", f"{MOCK}/_mock/reset")


@pytest.fixture
def budget(request):
    name = "py-" + request.node.name.replace("_", "-")[:40].lower()
    call("POST", f"{PROXY}/api/budgets", {"name": name, "max_dollars": "5", "period": "daily"})
    yield name
    call("DELETE", f"{PROXY}/api/budgets/{name}")


def client(budget, **kw):
    return anthropic.Anthropic(
        base_url=PROXY, api_key="sk-ant-test", default_headers={"X-Budget-Id": budget}, **kw
    )


def test_non_streaming_message_is_forwarded_and_charged(budget):
    usage = {"input_tokens": 1000, "output_tokens": 200}
    msg = client(budget).messages.create(
        model="claude-sonnet-4-6",
        max_tokens=1024,
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"x-mock": json.dumps({"usage": usage})},
    )
    assert msg.content[0].text == "Hello from the mock upstream."
    assert msg.usage.input_tokens == 1000
    seen = mock_stats()["seen"][0]
    assert seen["path"] == "/v1/messages"
    assert "x-budget-id" not in seen["headers"]
    # The current SDK sends the key as a bearer token or x-api-key; either way it arrives unchanged.
    assert "sk-ant-test" in (seen["headers"].get("x-api-key", "") + seen["headers"].get("authorization", ""))
    b = call("GET", f"{PROXY}/api/budgets/{budget}")
    assert b["spent_dollars"] == "0.006"  # 1000 × $3 + 200 × $15 per MTok


def test_streaming_message_arrives_whole_and_is_charged(budget):
    usage = {"input_tokens": 100, "output_tokens": 40, "cache_read_input_tokens": 1000}
    with client(budget).messages.stream(
        model="claude-haiku-4-5",
        max_tokens=512,
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"x-mock": json.dumps({"usage": usage, "text": "streamed through the proxy"})},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed through the proxy"
    assert final.usage.output_tokens == 40
    rec = call("GET", f"{PROXY}/api/budgets/{budget}/usage")["items"][0]
    assert rec["stream"] is True and rec["status"] == "ok"
    assert rec["cost_dollars"] == "0.0004"  # 100 × $1 + 1000 × $0.10 + 40 × $5 per MTok


def test_path_form_base_url_selects_the_budget(budget):
    c = anthropic.Anthropic(base_url=f"{PROXY}/b/{budget}", api_key="sk-ant-test")
    c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert call("GET", f"{PROXY}/api/budgets/{budget}")["requests"] == 1


def test_blocked_request_raises_without_retry(budget):
    call("PATCH", f"{PROXY}/api/budgets/{budget}", {"max_dollars": "0.01"})
    with pytest.raises(anthropic.RateLimitError) as info:
        client(budget, max_retries=2).messages.create(
            model="claude-sonnet-4-6", max_tokens=20000, messages=[{"role": "user", "content": "Hi"}]
        )
    err = info.value
    assert err.status_code == 429
    assert err.body["error"]["type"] == "billing_error"
    assert "would exceed its daily cap" in err.body["error"]["message"]
    assert mock_stats()["messages"] == 0
    # One attempt only: the SDK obeyed x-should-retry: false.
    assert call("GET", f"{PROXY}/api/budgets/{budget}")["blocked"] == 1


def test_a_clamped_request_is_a_normal_message_that_stops_at_max_tokens(budget):
    # Opus 4.8: 20,000 output tokens reserve $0.50; a $0.30 clamp budget lowers max_tokens.
    call("PATCH", f"{PROXY}/api/budgets/{budget}", {"max_dollars": "0.30", "admission": "clamp"})
    script = json.dumps({"usage": {"input_tokens": 10, "output_tokens": 50000}, "stop_at_max_tokens": True})
    raw = client(budget).messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=20000, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-mock": script},
    )
    n = int(raw.headers["x-agent-budget-clamped-max-tokens"])
    msg = raw.parse()
    assert 1024 <= n < 20000
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == n
    assert json.loads(mock_stats()["seen"][0]["body"])["max_tokens"] == n

    # Streaming (Claude Code's way), with room for another clamped call.
    call("PATCH", f"{PROXY}/api/budgets/{budget}", {"max_dollars": "0.60"})
    with client(budget).messages.stream(
        model="claude-opus-4-8", max_tokens=32000, messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-mock": script},
    ) as stream:
        m = int(stream.response.headers["x-agent-budget-clamped-max-tokens"])
        final = stream.get_final_message()
    assert 1024 <= m < 32000
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == m
    b = call("GET", f"{PROXY}/api/budgets/{budget}")
    assert float(b["spent_dollars"]) <= 0.60
    records = call("GET", f"{PROXY}/api/budgets/{budget}/usage")["items"]
    assert [r["clamped_max_tokens"] for r in records] == [m, n]


def test_a_virtual_key_alone_selects_the_budget_and_never_goes_upstream(budget):
    made = call("POST", f"{PROXY}/api/budgets/{budget}/keys", {"name": "py"})
    c = anthropic.Anthropic(base_url=PROXY, api_key=made["key"])  # no budget header
    msg = c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])
    assert msg.content[0].text == "Hello from the mock upstream."
    seen = mock_stats()["seen"][0]["headers"]
    assert seen.get("x-api-key") == "sk-ant-sdk-real" and "authorization" not in seen
    assert made["key"] not in json.dumps(seen)
    assert call("GET", f"{PROXY}/api/budgets/{budget}")["requests"] == 1
    call("DELETE", f"{PROXY}/api/budgets/{budget}/keys/{made['id']}")
    with pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="claude-haiku-4-5", max_tokens=10, messages=[{"role": "user", "content": "Hi"}])


def test_count_tokens_and_models_pass_through(budget):
    c = client(budget)
    n = c.messages.count_tokens(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Hi"}],
        extra_headers={"x-mock": json.dumps({"count": 77})},
    )
    assert n.input_tokens == 77
    models = c.models.list()
    assert models.data[0].id == "claude-sonnet-4-6"
