//! Container fixtures for the `testcontainers` tests: a private Docker network, the
//! `perdure-postgres:local` store and `perdure-node:local` nodes, built from local artifacts by
//! `docker/build-images.sh` (no registry is reachable). Uses testcontainers' generic-image API
//! (the machine's `docker-compose` is v1; testcontainers' compose support expects v2).

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

/// The store's password inside the test network (nothing is published but the nodes' HTTP).
const PG_PASSWORD: &str = "perdure-tc";

/// Whether a Docker engine answers. In CI a missing engine is a failure; elsewhere the caller
/// skips loudly.
pub fn docker_available() -> bool {
    Command::new("docker")
        .arg("info")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Image names unique to this test process, so concurrent test runs never share a tag.
#[derive(Clone, Debug)]
pub struct Images {
    /// The node image (`perdure-node-test:<pid>`).
    pub node: String,
    /// The store image (`perdure-postgres-test:<pid>`).
    pub postgres: String,
}

impl Images {
    /// Builds both images with `docker/build-images.sh`, staging the debug `perdure-node`
    /// binary this test run built (no release build needed).
    pub fn build() -> anyhow::Result<Self> {
        let bins = crate::ensure_built()?;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("tests/ has no parent")?
            .to_path_buf();
        let tag = std::process::id().to_string();
        let images = Self {
            node: format!("perdure-node-test:{tag}"),
            postgres: format!("perdure-postgres-test:{tag}"),
        };
        // A staging directory of our own: concurrent builds must not share target/docker.
        let stage = tempfile::tempdir()?;
        let out = Command::new("bash")
            .arg(root.join("docker/build-images.sh"))
            .env("PERDURE_NODE_BIN", bins.join("perdure-node"))
            .env("PERDURE_NODE_IMAGE", &images.node)
            .env("PERDURE_POSTGRES_IMAGE", &images.postgres)
            .env("PERDURE_DOCKER_STAGE", stage.path())
            .output()
            .context("running docker/build-images.sh")?;
        if !out.status.success() {
            bail!(
                "docker/build-images.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(images)
    }

    /// Removes both images (best effort).
    pub fn remove(&self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.node, &self.postgres])
            .output();
    }
}

/// A user-defined Docker network (container names resolve inside it); removed on drop.
#[derive(Debug)]
pub struct Network {
    /// Its name.
    pub name: String,
}

impl Network {
    /// Creates `perdure-tc-<pid>-<n>`: unique per call, so two tests of one process (a plain
    /// `cargo test` runs them on threads) never share a network or a container name.
    pub fn create() -> anyhow::Result<Self> {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("perdure-tc-{}-{n}", std::process::id());
        docker(&["network", "create", &name])?;
        Ok(Self { name })
    }

    /// Detaches a container from the network (a network partition for it).
    pub fn disconnect(&self, container: &str) -> anyhow::Result<()> {
        docker(&["network", "disconnect", &self.name, container])
    }

    /// Reattaches a container.
    pub fn connect(&self, container: &str) -> anyhow::Result<()> {
        docker(&["network", "connect", &self.name, container])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["network", "rm", &self.name])
            .output();
    }
}

/// Runs `docker ARGS`, failing with its stderr.
pub fn docker(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("docker").args(args).output()?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The store container, reachable from the nodes as `<network>-store:5432`.
pub async fn start_store(
    images: &Images,
    net: &Network,
) -> anyhow::Result<(ContainerAsync<GenericImage>, String)> {
    let (name, tag) = images
        .postgres
        .split_once(':')
        .context("image name without tag")?;
    let host = format!("{}-store", net.name);
    let c = GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stderr(
            "database system is ready to accept connections",
        ))
        .with_network(net.name.clone())
        .with_container_name(host.clone())
        .with_env_var("POSTGRES_USER", "perdure")
        .with_env_var("POSTGRES_DB", "perdure")
        .with_env_var("POSTGRES_PASSWORD", PG_PASSWORD)
        .with_startup_timeout(Duration::from_secs(120))
        .start()
        .await
        .context("starting the store container")?;
    let url = format!("postgres://perdure:{PG_PASSWORD}@{host}:5432/perdure");
    Ok((c, url))
}

/// A node container on the shared store, its HTTP port published on the host.
pub struct NodeContainer {
    /// The container.
    pub container: ContainerAsync<GenericImage>,
    /// Its name on the network (also its node name).
    pub name: String,
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
}

impl std::fmt::Debug for NodeContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeContainer")
            .field("name", &self.name)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// Starts node `index` (`<network>-node-<index>`) with extra `PERDURE_*` variables.
pub async fn start_node(
    images: &Images,
    net: &Network,
    store_url: &str,
    index: usize,
    extra_env: &[(&str, String)],
) -> anyhow::Result<NodeContainer> {
    let (image, tag) = images
        .node
        .split_once(':')
        .context("image name without tag")?;
    let name = format!("{}-node-{index}", net.name);
    let mut req = GenericImage::new(image, tag)
        .with_exposed_port(8080.tcp())
        .with_wait_for(WaitFor::message_on_stdout("perdure-node listening on"))
        .with_network(net.name.clone())
        .with_container_name(name.clone())
        .with_env_var("PERDURE_STORE", "postgres")
        .with_env_var("PERDURE_STORE_URL", store_url)
        .with_env_var("PERDURE_HTTP", "0.0.0.0:8080")
        // Reached only through the test's own network and loopback port mapping.
        .with_env_var("PERDURE_INSECURE_NO_AUTH", "true")
        .with_env_var("PERDURE_NODE_NAME", name.clone())
        .with_env_var("PERDURE_PARTITIONS", "16")
        .with_env_var("RUST_LOG", "warn")
        .with_startup_timeout(Duration::from_secs(120));
    for (k, v) in extra_env {
        req = req.with_env_var(*k, v.clone());
    }
    let container = req.start().await.context("starting a node container")?;
    let port = container.get_host_port_ipv4(8080).await?;
    Ok(NodeContainer {
        container,
        name,
        origin: format!("http://127.0.0.1:{port}"),
    })
}
