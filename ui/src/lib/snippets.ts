// Copy-ready client set-ups, one list per way of choosing a budget: [client, code], in the
// order the Setup page offers the clients.

/** The clients the Setup page offers, Claude Code first. */
export const CLIENTS = ["Claude Code", "Python SDK", "TypeScript SDK", "curl", "Base URL only"] as const;

const CURL_BODY = `'{"model":"claude-sonnet-4-6","max_tokens":256,"messages":[{"role":"user","content":"Hello"}]}'`;

/** With a virtual key the budget is the key: the agent needs only the proxy's URL and it. */
export function keySnippets(url: string, key: string): [string, string][] {
  return [
    // Gateway mode: Claude Code then shows the budget in /usage and its status line.
    ["Claude Code", `export CLAUDE_CODE_USE_GATEWAY=1\nexport ANTHROPIC_BASE_URL=${url}\nexport ANTHROPIC_AUTH_TOKEN=${key}\nclaude`],
    ["Python SDK", `import anthropic\n\nclient = anthropic.Anthropic(\n    base_url="${url}",\n    api_key="${key}",\n)`],
    ["TypeScript SDK", `import Anthropic from "@anthropic-ai/sdk";\n\nconst client = new Anthropic({\n  baseURL: "${url}",\n  apiKey: "${key}",\n});`],
    ["curl", `curl ${url}/v1/messages \\\n  -H "x-api-key: ${key}" -H "anthropic-version: 2023-06-01" \\\n  -H "content-type: application/json" \\\n  -d ${CURL_BODY}`],
    ["Base URL only", `base_url = "${url}"\napi_key = "${key}"`],
  ];
}

/** With the agent's own Anthropic key, the budget named in a header (or, failing that, the path). */
export function headerSnippets(url: string, budget: string): [string, string][] {
  return [
    ["Claude Code", `export ANTHROPIC_BASE_URL=${url}\nexport ANTHROPIC_CUSTOM_HEADERS="X-Budget-Id: ${budget}"\nclaude`],
    ["Python SDK", `import anthropic\n\nclient = anthropic.Anthropic(\n    base_url="${url}",\n    default_headers={"X-Budget-Id": "${budget}"},\n)`],
    ["TypeScript SDK", `import Anthropic from "@anthropic-ai/sdk";\n\nconst client = new Anthropic({\n  baseURL: "${url}",\n  defaultHeaders: { "X-Budget-Id": "${budget}" },\n});`],
    ["curl", `curl ${url}/v1/messages \\\n  -H "x-api-key: $ANTHROPIC_API_KEY" -H "anthropic-version: 2023-06-01" \\\n  -H "content-type: application/json" -H "X-Budget-Id: ${budget}" \\\n  -d ${CURL_BODY}`],
    ["Base URL only", `base_url = "${url}/b/${budget}"`],
  ];
}
