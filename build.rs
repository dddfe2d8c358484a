//! Records the git commit a binary was built from (it goes into every model manifest), and
//! builds the model catalogue (`models/catalogue/*.toml`) into the binary.
fn main() {
    catalogue();
    println!("cargo:rerun-if-env-changed=BUGFLOW_GIT_COMMIT");
    // A container build has no .git: deploy/Dockerfile passes the commit in.
    if let Ok(commit) = std::env::var("BUGFLOW_GIT_COMMIT")
        && !commit.is_empty()
    {
        println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=BUILD_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

/// Writes `$OUT_DIR/catalogue.rs`: `&[(file name, contents)]` of every catalogue file.
fn catalogue() {
    let dir = std::path::Path::new("models/catalogue");
    println!("cargo:rerun-if-changed=models/catalogue");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let mut out = String::from("&[\n");
    for path in &files {
        println!("cargo:rerun-if-changed={}", path.display());
        let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        out.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            path.file_name().unwrap_or_default().to_string_lossy(),
            absolute.display().to_string()
        ));
    }
    out.push_str("]\n");
    let target =
        std::path::Path::new(&std::env::var("OUT_DIR").unwrap_or_default()).join("catalogue.rs");
    if let Err(e) = std::fs::write(&target, out) {
        println!("cargo:warning=cannot write {}: {e}", target.display());
    }
}
