//! The transport fields of the `[cluster]` table: how this node links to its peers (see
//! `docs/cluster.md`).

use serde::Deserialize;

use super::{ConfigError, ConfigLayer, pick};
use crate::cluster::transport::{TlsFiles, TransportOptions};

/// Seeds as a TOML list or one comma-separated string.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Seeds {
    /// `["h1:7000", "h2:7000"]`.
    List(Vec<String>),
    /// `"h1:7000,h2:7000"`.
    Text(String),
}

impl Seeds {
    /// The addresses, trimmed, empty ones dropped.
    pub fn addrs(&self) -> Vec<String> {
        let raw: Vec<&str> = match self {
            Self::List(l) => l.iter().map(String::as_str).collect(),
            Self::Text(t) => t.split(',').collect(),
        };
        raw.into_iter()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }
}

/// The transport options of the merged layers (None when `cluster.listen` is unset).
pub(super) fn resolve(
    layers: &[(&str, ConfigLayer)],
    node_name: &str,
) -> Result<Option<TransportOptions>, ConfigError> {
    let Some((listen, src)) = pick(layers, |l| l.cluster.listen.as_ref()) else {
        if let Some((_, src)) = pick(layers, |l| l.cluster.seeds.as_ref()) {
            return Err(ConfigError {
                field: "cluster.seeds".into(),
                source_name: src,
                reason: "seeds are set but cluster.listen is not (PERDURE_CLUSTER_LISTEN or \
                         --cluster-listen): a cluster node needs an address of its own"
                    .into(),
            });
        }
        return Ok(None);
    };
    let listen = listen.parse().map_err(|e| ConfigError {
        field: "cluster.listen".into(),
        source_name: src.clone(),
        reason: format!("{listen:?} is not an address like 0.0.0.0:7000 ({e})"),
    })?;
    let mut opts = TransportOptions::new(node_name, listen);
    opts.advertise = pick(layers, |l| l.cluster.advertise.as_ref()).map(|(v, _)| v.clone());
    opts.seeds = pick(layers, |l| l.cluster.seeds.as_ref())
        .map(|(s, _)| s.addrs())
        .unwrap_or_default();
    opts.cookie = pick(layers, |l| l.cluster.cookie.as_ref()).map(|(v, _)| v.clone());
    let cert = pick(layers, |l| l.cluster.tls_cert.as_ref());
    let key = pick(layers, |l| l.cluster.tls_key.as_ref());
    let ca = pick(layers, |l| l.cluster.tls_ca.as_ref());
    opts.tls = match (cert, key, ca) {
        (None, None, None) => None,
        (Some((cert, _)), Some((key, _)), Some((ca, _))) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            server_name: pick(layers, |l| l.cluster.tls_server_name.as_ref())
                .map(|(v, _)| v.clone()),
        }),
        (c, k, a) => {
            let src = c.or(k).or(a).map(|(_, s)| s).unwrap_or_default();
            return Err(ConfigError {
                field: "cluster.tls_cert".into(),
                source_name: src,
                reason: "TLS needs all three of cluster.tls_cert, cluster.tls_key and \
                         cluster.tls_ca"
                    .into(),
            });
        }
    };
    opts.validate().map_err(|e| ConfigError {
        field: match e {
            crate::cluster::transport::TransportError::CookieRequired { .. } => "cluster.cookie",
            _ => "cluster.advertise",
        }
        .into(),
        source_name: src,
        reason: e.to_string(),
    })?;
    Ok(Some(opts))
}

#[cfg(test)]
mod tests {
    use super::super::NodeConfig;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigLayer {
        ConfigLayer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn cluster_fields_from_file_env_and_flags() {
        let file: ConfigLayer = toml::from_str(
            "[node]\nname = \"n1\"\n[cluster]\nlisten = \"127.0.0.1:7001\"\nseeds = [\"a:1\", \" b:2 \"]\n",
        )
        .unwrap();
        let c = NodeConfig::resolve(&[("file", file.clone())]).unwrap();
        let t = c.transport.unwrap();
        assert_eq!(t.node_name, "n1");
        assert_eq!(t.seeds, ["a:1", "b:2"]);
        assert_eq!(t.advertise_addr(), "127.0.0.1:7001");
        let e = env(&[
            ("PERDURE_CLUSTER_SEEDS", "x:1,,y:2"),
            ("PERDURE_CLUSTER_ADVERTISE", "node1:7001"),
            ("PERDURE_CLUSTER_COOKIE", "s3cret"),
        ]);
        let mut flags = ConfigLayer::default();
        flags.cluster.listen = Some("0.0.0.0:7001".into());
        let t = NodeConfig::resolve(&[("file", file), ("environment", e), ("flags", flags)])
            .unwrap()
            .transport
            .unwrap();
        assert_eq!(t.seeds, ["x:1", "y:2"]);
        assert_eq!(t.advertise_addr(), "node1:7001");
        assert_eq!(t.cookie.as_deref(), Some("s3cret"));
        assert!(NodeConfig::resolve(&[]).unwrap().transport.is_none());
    }

    #[test]
    fn a_public_listen_address_without_a_cookie_is_refused() {
        let e = env(&[("PERDURE_CLUSTER_LISTEN", "0.0.0.0:7000")]);
        let err = NodeConfig::resolve(&[("environment", e)]).unwrap_err();
        assert_eq!(err.field, "cluster.cookie");
        assert!(err.reason.contains("not a loopback address"), "{err}");
        let e = env(&[("PERDURE_CLUSTER_LISTEN", "127.0.0.1:7000")]);
        assert!(NodeConfig::resolve(&[("environment", e)]).is_ok());
        let e = env(&[("PERDURE_CLUSTER_LISTEN", "nowhere")]);
        assert_eq!(
            NodeConfig::resolve(&[("environment", e)])
                .unwrap_err()
                .field,
            "cluster.listen"
        );
        let e = env(&[("PERDURE_CLUSTER_SEEDS", "a:1")]);
        assert_eq!(
            NodeConfig::resolve(&[("environment", e)])
                .unwrap_err()
                .field,
            "cluster.seeds"
        );
        let e = env(&[
            ("PERDURE_CLUSTER_LISTEN", "127.0.0.1:7000"),
            ("PERDURE_CLUSTER_TLS_CERT", "/x.pem"),
        ]);
        assert_eq!(
            NodeConfig::resolve(&[("environment", e)])
                .unwrap_err()
                .field,
            "cluster.tls_cert"
        );
    }
}
