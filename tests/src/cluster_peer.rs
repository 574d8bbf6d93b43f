//! Drives `perdure-cluster-peer` processes: one cluster node each, commanded line by line
//! over stdin/stdout; stderr (its log) is kept for assertions.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};

/// A running peer; killed on drop.
pub struct PeerProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    log: Arc<Mutex<Vec<String>>>,
    /// Its node name.
    pub name: String,
    /// Its cluster address.
    pub addr: String,
}

/// A free loopback port (bound then released; the peer binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PeerProcess {
    /// Starts a peer named `name` on a free loopback port with the partition table `owners`
    /// (comma-separated node names), dialling `seeds`, with `cookie` (None: the loopback
    /// default); waits for its ready line.
    pub fn spawn(
        name: &str,
        owners: &str,
        seeds: &[&str],
        cookie: Option<&str>,
    ) -> anyhow::Result<Self> {
        Self::spawn_with(name, owners, seeds, cookie, None)
    }

    /// Like [`PeerProcess::spawn`], with TLS files from `tls_dir` (`node.pem`, `node.key`,
    /// `ca.pem`).
    pub fn spawn_with(
        name: &str,
        owners: &str,
        seeds: &[&str],
        cookie: Option<&str>,
        tls_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let dir = crate::ensure_built()?;
        let addr = format!("127.0.0.1:{}", free_port()?);
        let mut cmd = Command::new(dir.join("perdure-cluster-peer"));
        cmd.args(["--name", name, "--listen", &addr, "--owners", owners]);
        if !seeds.is_empty() {
            cmd.args(["--seeds", &seeds.join(",")]);
        }
        if let Some(c) = cookie {
            cmd.args(["--cookie", c]);
        }
        if let Some(d) = tls_dir {
            cmd.arg("--tls-dir").arg(d);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn perdure-cluster-peer")?;
        let stdin = child.stdin.take().context("stdin")?;
        let out = child.stdout.take().context("stdout")?;
        let err = child.stderr.take().context("stderr")?;
        let (tx, stdout) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                log2.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let mut p = Self {
            child,
            stdin,
            stdout,
            log,
            name: name.to_string(),
            addr,
        };
        let ready = p.read_line(Duration::from_secs(60))?;
        if ready != format!("ready {name}") {
            bail!("peer {name} said {ready:?}; log: {:?}", p.log());
        }
        Ok(p)
    }

    fn read_line(&mut self, timeout: Duration) -> anyhow::Result<String> {
        self.stdout
            .recv_timeout(timeout)
            .with_context(|| format!("peer {} did not answer; log: {:?}", self.name, self.log()))
    }

    /// Sends a command and returns its one-line answer.
    pub fn cmd(&mut self, line: &str) -> anyhow::Result<String> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        self.read_line(Duration::from_secs(60))
    }

    /// Its process id (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a test CA and one node certificate (for the name `perdure`, usable as server and
/// client) into `dir` with the `openssl` command: `ca.pem`, `node.pem`, `node.key`.
pub fn write_test_certs(dir: &std::path::Path) -> anyhow::Result<()> {
    let run = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        if !out.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=perdure-test-ca",
    ]);
    run(&ca)?;
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "node.key",
        "-out",
        "node.csr",
        "-subj",
        "/CN=perdure",
    ]);
    run(&csr)?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:perdure,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ])
}
