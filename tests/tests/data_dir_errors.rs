//! The `perdure-node` binary and its data directory: a directory it may not write and a
//! directory another node process already owns are clear errors at start, not panics.
//!
//! Permission bits do not stop root, and CI runs as root: there the node is started as the
//! unprivileged user `nobody` (`setpriv`), so the kernel really refuses it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use perdure_tests::{NodeProcess, ensure_built};

fn node_bin() -> PathBuf {
    ensure_built().unwrap().join("perdure-node")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `perdure-node dev --data-dir <data>` and returns its output; as `nobody` when root,
/// from a copy of the binary in `reachable` (the checkout may sit under a private home).
fn dev_on(data: &Path, reachable: &Path) -> Output {
    let mut node = node_bin();
    let args = [
        "dev".as_ref(),
        "--http".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ];
    let mut cmd = if is_root() {
        let copy = reachable.join("perdure-node");
        std::fs::copy(&node, &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        node = copy;
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(&node);
        c
    } else {
        Command::new(&node)
    };
    cmd.args(args).output().unwrap()
}

#[test]
fn a_data_directory_the_node_may_not_write_is_a_clear_error() {
    // Under /tmp (world-traversable), so `nobody` reaches the directory and meets its mode.
    let parent = tempfile::tempdir_in("/tmp").unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let locked = parent.path().join("no-access");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = dev_on(&locked.join("data"), parent.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("no-access") && stderr.to_lowercase().contains("permission"),
        "the error names the directory and the cause: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_second_node_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data_arg = dir.path().join("data").to_string_lossy().into_owned();
    let args: Vec<std::ffi::OsString> = ["dev", "--http", "127.0.0.1:0", "--data-dir", &data_arg]
        .iter()
        .map(Into::into)
        .collect();
    let first = NodeProcess::spawn(&args, &[], dir).unwrap();
    let out = Command::new(node_bin())
        .args(["dev", "--http", "127.0.0.1:0", "--data-dir", &data_arg])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        stderr.contains("in use by another process") && stderr.contains(&data_arg),
        "{stderr}"
    );
    // The first node is unharmed.
    assert!(first.terminate().unwrap(), "the first node exits cleanly");
}
