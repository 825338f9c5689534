fn main() {
    // The config lives at the repository root (tauri.conf.json) beside the UI it serves;
    // tauri-build reads the config of its working directory, so build from there.
    if let Err(e) = std::env::set_current_dir("..") {
        println!("cargo:warning=cannot reach the repository root: {e}");
        std::process::exit(1);
    }
    let attributes =
        tauri_build::Attributes::new().capabilities_path_pattern("./src-tauri/capabilities/**/*");
    if let Err(e) = tauri_build::try_build(attributes) {
        println!("cargo:warning=tauri build step failed: {e:#}");
        std::process::exit(1);
    }
}
