//! Records the git commit a binary was built from (it goes into every model manifest).
fn main() {
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
