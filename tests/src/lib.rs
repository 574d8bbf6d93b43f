//! Shared helpers for the end-to-end tests: build and spawn the `perdure-node` and `perdure`
//! binaries, on a free loopback port and a temporary data directory.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};

pub mod app;
pub mod cluster_peer;
pub mod containers;

/// The base path of the Durable Functions routes.
pub const BASE: &str = "/runtime/webhooks/durabletask";

/// The directory holding the workspace's built binaries (`target/debug`).
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/debug/deps/<test> -> target/debug
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test executable has no grandparent directory")?;
    Ok(dir.to_path_buf())
}

/// Builds `perdure-node`, `perdure-test-node` and `perdure` once per test process (fast when up to date), so tests
/// never run a stale binary.
pub fn ensure_built() -> anyhow::Result<PathBuf> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = bin_dir().map_err(|e| e.to_string())?;
            let profile_release = dir.ends_with("release");
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args([
                "build",
                "--bins",
                "-p",
                "perdure-node",
                "-p",
                "perdure-client",
                "-p",
                "perdure-tests",
            ]);
            if profile_release {
                cmd.arg("--release");
            }
            let status = cmd
                .stdout(Stdio::null())
                .status()
                .map_err(|e| format!("cannot run cargo build: {e}"))?;
            if !status.success() {
                return Err(format!("cargo build of the binaries failed: {status}"));
            }
            Ok(dir)
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The arguments of `run` for a cluster node on PostgreSQL: `url`, an HTTP port the system
/// picks, `partitions`, and the node name.
pub fn postgres_run_args(url: &str, partitions: u32, name: &str) -> Vec<std::ffi::OsString> {
    let partitions = partitions.to_string();
    [
        "run",
        "--store",
        "postgres",
        "--store-url",
        url,
        "--http",
        "127.0.0.1:0",
        "--partitions",
        &partitions,
        "--node-name",
        name,
    ]
    .iter()
    .map(Into::into)
    .collect()
}

/// A `perdure-node dev` process on a free port with its own data directory; killed on drop.
pub struct NodeProcess {
    child: Child,
    /// Lines the process wrote to stderr, when spawned with [`NodeProcess::spawn_logged`].
    stderr: Option<mpsc::Receiver<String>>,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// The first line the node printed (`perdure-node listening on ... (store: ..., N partitions)`).
    pub banner: String,
    /// The data directory (kept until drop).
    pub data_dir: tempfile::TempDir,
}

impl NodeProcess {
    /// Spawns `perdure-node dev --http 127.0.0.1:0 --data-dir <tmp> --partitions 8` and waits
    /// for its "listening on" line.
    pub fn spawn_dev() -> anyhow::Result<Self> {
        Self::spawn_dev_with(&[])
    }

    /// Like [`NodeProcess::spawn_dev`] with extra flags.
    pub fn spawn_dev_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_bin_dev("perdure-node", extra)
    }

    /// Like [`NodeProcess::spawn_dev_with`] with environment variables (`PERDURE_API_KEYS`,
    /// say).
    pub fn spawn_dev_env(extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_bin_dev_env("perdure-node", extra, envs)
    }

    /// Like [`NodeProcess::spawn_dev`], serving the test app ([`app`]) from
    /// `perdure-test-node`.
    pub fn spawn_test_app() -> anyhow::Result<Self> {
        Self::spawn_bin_dev("perdure-test-node", &[])
    }

    /// Like [`NodeProcess::spawn_test_app`] with extra flags and environment variables.
    pub fn spawn_test_app_env(extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::spawn_bin_dev_env("perdure-test-node", extra, envs)
    }

    fn spawn_bin_dev(bin: &str, extra: &[&str]) -> anyhow::Result<Self> {
        Self::spawn_bin_dev_env(bin, extra, &[])
    }

    fn spawn_bin_dev_env(bin: &str, extra: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let data_dir = tempfile::tempdir()?;
        let mut args: Vec<std::ffi::OsString> = vec![
            "dev".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--partitions".into(),
            "8".into(),
            "--data-dir".into(),
            data_dir.path().into(),
        ];
        args.extend(extra.iter().map(Into::into));
        Self::spawn_bin(bin, &args, envs, data_dir, false)
    }

    /// Spawns `perdure-node` with any arguments and environment variables; the process must
    /// print its "listening on" line.
    pub fn spawn(
        args: &[std::ffi::OsString],
        envs: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        Self::spawn_bin("perdure-node", args, envs, data_dir, false)
    }

    /// Like [`NodeProcess::spawn`], running `perdure-test-node` (the test app, [`app`]).
    pub fn spawn_app(
        args: &[std::ffi::OsString],
        envs: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        Self::spawn_bin("perdure-test-node", args, envs, data_dir, false)
    }

    /// The process id (for `kill -STOP` and the like).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Like [`NodeProcess::spawn`], capturing stderr (read it with
    /// [`NodeProcess::stop_and_collect_stderr`]); `envs` may set `RUST_LOG` (default `warn`).
    pub fn spawn_logged(
        args: &[std::ffi::OsString],
        envs: &[(&str, &str)],
        data_dir: tempfile::TempDir,
    ) -> anyhow::Result<Self> {
        Self::spawn_bin("perdure-node", args, envs, data_dir, true)
    }

    fn spawn_bin(
        bin: &str,
        args: &[std::ffi::OsString],
        envs: &[(&str, &str)],
        data_dir: tempfile::TempDir,
        capture_stderr: bool,
    ) -> anyhow::Result<Self> {
        let dir = ensure_built()?;
        let mut child = Command::new(dir.join(bin))
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(envs.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if capture_stderr {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .with_context(|| format!("spawning {bin}"))?;
        let stderr = match child.stderr.take() {
            Some(err) => {
                let (tx, rx) = mpsc::channel();
                std::thread::spawn(move || {
                    for line in BufReader::new(err).lines() {
                        let Ok(line) = line else { break };
                        if tx.send(line).is_err() {
                            break;
                        }
                    }
                });
                Some(rx)
            }
            None => None,
        };
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some(rest) = line.strip_prefix("perdure-node listening on ") {
                    let origin = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((origin, line.clone()));
                    sent = true;
                }
            }
        });
        let (origin, banner) = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(o) => o,
            Err(_) => {
                let _ = child.kill();
                bail!("{bin} did not report its address within 60 s");
            }
        };
        Ok(Self {
            child,
            stderr,
            origin,
            banner,
            data_dir,
        })
    }

    /// The Durable Functions base URL (`http://127.0.0.1:PORT/runtime/webhooks/durabletask`).
    pub fn base(&self) -> String {
        format!("{}{BASE}", self.origin)
    }

    /// Sends SIGTERM and waits for the process to exit; returns whether it exited cleanly.
    pub fn terminate(self) -> anyhow::Result<bool> {
        self.stop("TERM")
    }

    /// Sends SIGINT (Ctrl-C) and waits for the process to exit; returns whether it exited
    /// cleanly.
    pub fn interrupt(self) -> anyhow::Result<bool> {
        self.stop("INT")
    }

    /// Sends a signal (`TERM`, `INT`) without waiting; [`NodeProcess::wait_exit`] waits.
    pub fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} failed: {status}");
        }
        Ok(())
    }

    /// Waits for the process to exit; returns whether it exited cleanly.
    pub fn wait_exit(mut self) -> anyhow::Result<bool> {
        Ok(self.child.wait()?.success())
    }

    fn stop(self, signal: &str) -> anyhow::Result<bool> {
        self.signal(signal)?;
        self.wait_exit()
    }

    /// Sends SIGTERM, waits for the exit and returns everything the process wrote to stderr
    /// (empty unless spawned with [`NodeProcess::spawn_logged`]).
    pub fn stop_and_collect_stderr(mut self) -> anyhow::Result<(bool, String)> {
        self.signal("TERM")?;
        let ok = self.child.wait()?.success();
        let lines: Vec<String> = self
            .stderr
            .take()
            .map(|rx| rx.iter().collect())
            .unwrap_or_default();
        Ok((ok, lines.join("\n")))
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the `perdure` CLI against a node; returns (success, stdout, stderr).
pub fn perdure_cli(origin: &str, args: &[&str]) -> anyhow::Result<(bool, String, String)> {
    let dir = ensure_built()?;
    let out = Command::new(dir.join("perdure"))
        .arg("--url")
        .arg(origin)
        .args(args)
        .output()
        .context("running perdure")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The Python of the virtual environment made by `.ci/python-client.sh`
/// (`PERDURE_PY_VENV`, default `target/python-venv`) if it can `import module`; otherwise
/// `None` after a loud skip message, or a panic under CI, where the script always runs first.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let venv = std::env::var("PERDURE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target/python-venv"));
    let python = venv.join("bin/python");
    let ready = python.exists()
        && std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .status()
            .is_ok_and(|s| s.success());
    if ready {
        return Some(python);
    }
    let msg = format!(
        "SKIPPED: no Python venv with {module} at {} — run `bash .ci/python-client.sh` to \
         install it and enable this test",
        venv.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("\n!!!!!!!!!! {msg} !!!!!!!!!!\n");
    None
}

/// Runs `tests/python/<script> <arg>` with `python` and asserts it reported
/// `passed, 0 failed` without a traceback.
pub fn run_python_script(python: &std::path::Path, script: &str, arg: &str) {
    run_python_script_with(python, script, &[arg]);
}

/// Like [`run_python_script`] with several arguments.
pub fn run_python_script_with(python: &std::path::Path, script: &str, args: &[&str]) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let out = std::process::Command::new(python)
        .arg(root.join("tests/python").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("passed, 0 failed"),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        !stderr.contains("Traceback"),
        "python printed a traceback:\n{stderr}"
    );
}

/// A free `127.0.0.1:PORT` (for a listener a spawned node must bind, asked for explicitly).
pub fn free_loopback_addr() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.to_string())
        .expect("a free loopback port")
}

/// The API keys of the tests' keyed nodes, one per role.
pub mod keys {
    /// The reader's key.
    pub const READER: &str = "pd_reader_0123456789abcdef";
    /// The operator's key.
    pub const OPERATOR: &str = "pd_operator_0123456789abcdef";
    /// The admin's key.
    pub const ADMIN: &str = "pd_admin_0123456789abcdef";

    /// `PERDURE_API_KEYS` with the three keys.
    pub fn env() -> String {
        format!("reader:{READER},operator:{OPERATOR},admin:{ADMIN}")
    }
}

/// A dev node with the three [`keys`], serving gRPC on a free port, with `extra` flags;
/// (node, gRPC address).
pub fn keyed_dev_node(extra: &[&str]) -> anyhow::Result<(NodeProcess, String)> {
    let grpc = free_loopback_addr();
    let mut args = vec!["--grpc", grpc.as_str()];
    args.extend_from_slice(extra);
    let node = NodeProcess::spawn_dev_env(&args, &[("PERDURE_API_KEYS", &keys::env())])?;
    Ok((node, grpc))
}
