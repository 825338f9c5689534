"""Drives the real desktop app's window through tauri-driver and WebKitWebDriver (W3C
WebDriver over plain HTTP): create a budget in the window, watch spend update live as proxied
requests arrive, close the window and check the proxy keeps answering.

The app starts on a port that is already taken: the run first starts its proxy on <port> from
the settings page.

Usage: webdriver.py <app binary> <port> <notifications log>; the environment
(DISPLAY, DBUS_SESSION_BUS_ADDRESS, AGENT_BUDGET_*) is the app's, via tauri-driver.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

APP, PORT, NOTIFY = sys.argv[1], sys.argv[2], sys.argv[3]
API = f"http://127.0.0.1:{PORT}/agent-budget"
WD = os.environ.get("WEBDRIVER_URL", "http://127.0.0.1:4444")


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json", **(headers or {})})
    with urllib.request.urlopen(req, timeout=60) as r:
        text = r.read()
        return json.loads(text) if text else None


def until(what, fn, seconds=30):
    deadline = time.time() + seconds
    while True:
        try:
            v = fn()
            if v:
                return v
        except Exception:  # the element may not exist yet
            pass
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(0.2)


caps = {"capabilities": {"alwaysMatch": {"browserName": "wry", "tauri:options": {"application": APP}}}}
session = call("POST", f"{WD}/session", caps)["value"]["sessionId"]
S = f"{WD}/session/{session}"
ELEM = "element-6066-11e4-a52e-4f735466cecf"  # the W3C web element identifier


def find(css):
    return call("POST", f"{S}/element", {"using": "css selector", "value": css})["value"][ELEM]


def text(css):
    return call("GET", f"{S}/element/{find(css)}/text")["value"]


def script(js):
    # Scripts here are idempotent; retried because the driver answers 500 while a page settles.
    return until(f"script {js[:30]}", lambda: [call("POST", f"{S}/execute/sync", {"script": js, "args": []})["value"]])[0]


passed = failed = 0


def check(name, fn):
    global passed, failed
    try:
        fn()
        passed += 1
        print(f"ok - {name}")
    except Exception as e:  # report and go on
        failed += 1
        print(f"not ok - {name}: {e}")


def retry_on_another_port():
    script("location.hash = '#/settings'")
    until("the settings page to say why the proxy is not running", lambda: "already in use" in text("[role=alert]"))
    until("clearing the port", lambda: call("POST", f"{S}/element/{find('input[name=port]')}/clear", {}) or True)
    until("typing the port", lambda: call("POST", f"{S}/element/{find('input[name=port]')}/value", {"text": PORT}) or True)
    until("starting the proxy", lambda: call("POST", f"{S}/element/{find('button[type=submit]')}/click", {}) or True)
    until("the proxy on the new port", lambda: call("GET", f"{API}/health") == {"ok": True})
    until("the settings page to say it runs", lambda: f"running on port {PORT}" in text("section"))


def launch_at_login():
    import glob
    script("location.hash = '#/settings'")
    assert not glob.glob(os.path.expanduser("~/.config/autostart/*.desktop"))
    until("ticking the box", lambda: call("POST", f"{S}/element/{find('section input[type=checkbox]')}/click", {}) or True)
    until("the autostart entry", lambda: glob.glob(os.path.expanduser("~/.config/autostart/*.desktop")))
    until("unticking the box", lambda: call("POST", f"{S}/element/{find('section input[type=checkbox]')}/click", {}) or True)
    until("the entry to go", lambda: not glob.glob(os.path.expanduser("~/.config/autostart/*.desktop")))


def pause_is_saved():
    prefs = os.path.expanduser("~/.config/dev.agent-budget.desktop/preferences.json")
    saved = lambda: json.load(open(prefs))["notifications_muted"] if os.path.exists(prefs) else None
    script("location.hash = '#/settings'")
    box = "section > label:nth-of-type(2) > input[type=checkbox]"
    until("pausing notifications", lambda: call("POST", f"{S}/element/{find(box)}/click", {}) or True)
    until("the pause to be saved", lambda: saved() is True)
    until("resuming notifications", lambda: call("POST", f"{S}/element/{find(box)}/click", {}) or True)
    until("the resume to be saved", lambda: saved() is False)


def keychain_from_settings():
    # The key typed into Settings lands in the session's OS keychain; only its last 4 show.
    import subprocess
    show = lambda: subprocess.run([os.environ["KEY_CLI"], "key", "show"], capture_output=True, text=True).stdout
    assert "holds no Anthropic key" in show()
    script("location.hash = '#/setup'")
    until("Setup to say virtual keys need the real key", lambda: "No real Anthropic key is set" in text("[data-testid=no-real-key]"))
    script("location.hash = '#/settings'")
    until("the key field", lambda: find("input[name=upstream_key]"))
    until("typing the key", lambda: call("POST", f"{S}/element/{find('input[name=upstream_key]')}/value", {"text": "sk-ant-DESKTOP-5ecret-k3y9"}) or True)
    until("saving it", lambda: call("POST", f"{S}/element/{find('button[name=save_upstream_key]')}/click", {}) or True)
    until("the page to show its last 4", lambda: "…k3y9" in text("[data-testid=upstream-key]"))
    assert "DESKTOP-5ecret" not in script("return document.body.innerText")
    until("the keychain to hold it", lambda: "ending in …k3y9" in show())
    script("location.hash = '#/setup'")
    until("Setup to name the key virtual keys go with", lambda: "…k3y9, from the OS keychain" in text("[data-testid=real-key]"))
    script("location.hash = '#/settings'")
    until("the key's remove button", lambda: find("button[name=remove_upstream_key]"))
    until("removing it", lambda: call("POST", f"{S}/element/{find('button[name=remove_upstream_key]')}/click", {}) or True)
    until("the page to say none is set", lambda: "No key is set" in text("[data-testid=upstream-key]"))
    assert "holds no Anthropic key" in show()


def create_budget():
    script("location.hash = '#/'")
    until("the overview", lambda: text("h1") == "Overview")
    script("location.hash = '#/new'")
    until("the form", lambda: text("h1") == "New budget")
    # Each interaction is retried: the page may still be rendering when the driver first asks.
    until("typing the name", lambda: call("POST", f"{S}/element/{find('input[name=name]')}/value", {"text": "window"}) or True)
    until("typing the cap", lambda: call("POST", f"{S}/element/{find('input[name=max_dollars]')}/value", {"text": "1"}) or True)
    until("submitting", lambda: call("POST", f"{S}/element/{find('button[type=submit]')}/click", {}) or True)
    until("the new budget's page", lambda: text("h1") == "Budget window")
    token = open(os.environ["ADMIN_TOKEN_FILE"]).read().strip()
    window = call("GET", f"{API}/api/budgets/window", headers={"authorization": f"Bearer {token}"})
    assert window["max_dollars"] == "1"


def live_update():
    script("location.hash = '#/'")
    until("the budget card", lambda: "$0.00" in text("[data-testid=budget-window]"))
    script("window.__marker = 'no reload'")
    call("POST", f"{API}/v1/messages",
         {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
         {"x-api-key": "sk-desk", "x-budget-id": "window", "x-mock": json.dumps({"usage": {"input_tokens": 0, "output_tokens": 120000}})})
    until("the card to show the new spend", lambda: "$0.60" in text("[data-testid=budget-window]"))
    assert script("return window.__marker") == "no reload"
    until("the 50 % notification", lambda: "Budget 'window' at 50%" in open(NOTIFY).read())


def team_database_from_settings():
    # A team database nobody answers on: saved (0600), the proxy restarts on it and says why it
    # cannot run; cleared, it runs alone again on the same port. The password never shows.
    prefs = os.path.expanduser("~/.config/dev.agent-budget.desktop/preferences.json")
    script("location.hash = '#/settings'")
    field = "input[name=team_database]"
    until("typing the database", lambda: call("POST", f"{S}/element/{find(field)}/value", {"text": "postgres://agent:hunter2@127.0.0.1:1/budgets"}) or True)
    until("saving it", lambda: call("POST", f"{S}/element/{find('button[name=save_team_database]')}/click", {}) or True)
    until("the page to say why the proxy stopped", lambda: "team database is unreachable" in text("section"), 60)
    assert json.load(open(prefs))["database"] == "postgres://agent:hunter2@127.0.0.1:1/budgets"
    assert os.stat(prefs).st_mode & 0o777 == 0o600
    assert "hunter2" not in script("return document.body.innerText")
    until("clearing it", lambda: call("POST", f"{S}/element/{find('button[name=save_team_database]')}/click", {}) or True)
    until("the proxy alone again", lambda: call("GET", f"{API}/health") == {"ok": True}, 60)
    until("the page to say so", lambda: "enforces its budgets alone" in text("[data-testid=team-database]"))
    assert json.load(open(prefs))["database"] is None


def export_opens_in_browser():
    # The window has no browser session: Export CSV opens a one-time link in the browser
    # (a stand-in xdg-open on the app's PATH writes down what it was given).
    script("location.hash = '#/budgets/window'")
    until("the budget page", lambda: text("h1") == "Budget window")
    opened = os.environ["OPENED_FILE"]
    until("clicking Export CSV", lambda: call("POST", f"{S}/element/{find('a[download]')}/click", {}) or True)
    link = until("the browser to be opened", lambda: open(opened).read().strip() if os.path.exists(opened) else None)
    assert "/agent-budget/sign-in?code=" in link and "usage.csv" in link, link
    req = urllib.request.Request(link.replace("localhost", "127.0.0.1"))
    opener = urllib.request.build_opener(NoRedirect())
    try:
        opener.open(req, timeout=30)
        raise AssertionError("no redirect")
    except urllib.error.HTTPError as e:
        assert e.code == 303, e.code
        assert e.headers["location"] == "/agent-budget/api/budgets/window/usage.csv", e.headers["location"]
        cookie = e.headers["set-cookie"].split(";")[0]
    csv = urllib.request.urlopen(urllib.request.Request(f"{API}/api/budgets/window/usage.csv", headers={"cookie": cookie}), timeout=30).read().decode()
    assert csv.startswith("id,created_at"), csv[:80]


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def close_keeps_proxy():
    # What the window manager's close button does: ask the window to close (it hides instead).
    script("window.__TAURI_INTERNALS__.invoke('plugin:window|close', {label: 'main'})")
    time.sleep(1)
    assert call("GET", f"{API}/health") == {"ok": True}
    assert call("GET", f"{S}/title")["value"] == "agent-budget", "the app is still running"


check("a taken port: start the proxy on another one from the settings page", retry_on_another_port)
check("launch at login from the settings page writes and removes the autostart entry", launch_at_login)
check("pausing notifications is saved for the next start", pause_is_saved)
check("the Anthropic key typed into Settings goes to the OS keychain, and is removed from there", keychain_from_settings)
check("create a budget in the window", create_budget)
check("spend and notifications update live as requests arrive", live_update)
check("Export CSV in the window opens a signed-in link in the browser", export_opens_in_browser)
check("a team database set in Settings is saved and the proxy restarts on it", team_database_from_settings)
check("closing the window leaves the proxy running", close_keeps_proxy)
try:
    call("DELETE", S)
except Exception:
    pass
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
