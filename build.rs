//! The dashboard (ui/dist) is embedded in the binary. When it has not been built yet, a
//! placeholder page says how to build it, so the core still compiles on its own.

fn main() {
    let dist = std::path::Path::new("ui/dist");
    let index = dist.join("index.html");
    if !index.exists() {
        let page = "<!doctype html><meta charset=utf-8><title>agent-budget</title>\
            <p>The dashboard was not built into this binary. Run <code>npm ci &amp;&amp; npm run build</code> \
            in <code>ui/</code>, then rebuild (<code>scripts/run.sh</code> does both).</p>";
        if std::fs::create_dir_all(dist).is_ok() {
            let _ = std::fs::write(&index, page);
        }
    }
    println!("cargo:rerun-if-changed=ui/dist");
}
