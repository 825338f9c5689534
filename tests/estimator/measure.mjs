// Measures the admission estimator against the offline reference tokenizer
// (@anthropic-ai/tokenizer, Anthropic's published Claude tokenizer) on the samples here.
// Usage: (cd tests/estimator && npm install && node measure.mjs)  — prints a Markdown table.
import { countTokens } from "@anthropic-ai/tokenizer";
import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const dir = new URL("./samples/", import.meta.url).pathname;
const files = readdirSync(dir).sort().map((f) => join(dir, f));
const out = execFileSync("cargo", ["run", "--quiet", "--example", "estimate", "--", ...files], { encoding: "utf8" });
const rows = out.trim().split("\n").map((l) => l.split("\t"));
console.log("| sample | characters | reference tokens | low | high (older models) | high (new tokenizer) | high ÷ reference | low ÷ reference |");
console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
for (const [path, chars, low, high, highNew, imageRef] of rows) {
  const name = path.split("/").pop();
  const ref = imageRef !== "-" ? Number(imageRef) : countTokens(readFileSync(path, "utf8"));
  const r = (x) => (Number(x) / ref).toFixed(2);
  console.log(`| ${name} | ${chars} | ${ref} | ${low} | ${high} | ${highNew} | ${r(high)} | ${r(low)} |`);
}
