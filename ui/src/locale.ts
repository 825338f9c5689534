// Under LANG=C, WebKit reports the language "C", which Intl (and so the chart library) rejects.
// Imported first by main.ts: a module, not an inline script, so the page's CSP can forbid those.
try {
  new Intl.NumberFormat(navigator.language);
} catch {
  Object.defineProperty(Navigator.prototype, "language", { get: () => "en-US" });
}
