//! The `[auth]` table: API keys with roles (`docs/operations.md`, "Access control").
//!
//! Keys come from the file as SHA-256 digests (`sha256`, never the secret) and from the
//! environment (`PERDURE_API_KEYS`, comma-separated `role:secret` or `role:sha256:digest`);
//! the node accepts the keys of every layer. Without any key, a node that listens on an
//! address other than loopback (HTTP or gRPC) refuses to start unless
//! `auth.insecure_no_auth` (`--insecure-no-auth`) says so.

use std::net::SocketAddr;

use serde::Deserialize;

use super::{ConfigError, ConfigLayer, pick};
use crate::access::{ApiKeys, KeyEntry, Role};

/// The `[auth]` table.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthLayer {
    /// Accepted keys: `{ name = "ci", role = "operator", sha256 = "..." }`.
    pub keys: Option<Vec<KeyLayer>>,
    /// Whether `/metrics` is served without a key (default `true`).
    pub metrics_open: Option<bool>,
    /// Serve every route without keys even on a non-loopback address.
    pub insecure_no_auth: Option<bool>,
}

/// One key of the `[auth]` table. Its `Debug` never shows a secret.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLayer {
    /// A name shown in logs (default: `key-N`).
    pub name: Option<String>,
    /// `reader`, `operator` or `admin`.
    pub role: String,
    /// The SHA-256 of the key, in hexadecimal (`perdure-node key` prints it).
    pub sha256: Option<String>,
    /// The key itself: only from the environment, never read from a file.
    #[serde(skip)]
    pub secret: Option<String>,
}

impl std::fmt::Debug for KeyLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyLayer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("sha256", &self.sha256)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `PERDURE_API_KEYS`: comma-separated `role:secret` or `role:sha256:digest`.
pub(super) fn keys_from_env(var: &str, v: &str) -> Result<Vec<KeyLayer>, ConfigError> {
    let mut out = Vec::new();
    for (i, item) in v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let bad = |reason: &str| ConfigError {
            field: "auth.keys".into(),
            source_name: format!("environment {var}"),
            reason: format!("entry {} {reason}", i + 1),
        };
        let Some((role, rest)) = item.split_once(':') else {
            return Err(bad("is not role:key (like operator:pd_...)"));
        };
        let mut key = KeyLayer {
            name: Some(format!("env-{}", i + 1)),
            role: role.to_string(),
            ..KeyLayer::default()
        };
        match rest.strip_prefix("sha256:") {
            Some(hex) => key.sha256 = Some(hex.to_string()),
            None => key.secret = Some(rest.to_string()),
        }
        out.push(key);
    }
    Ok(out)
}

/// What the node's access control is, resolved from every layer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// The accepted keys (empty: every route is open).
    pub keys: ApiKeys,
    /// Whether `/metrics` needs no key.
    pub metrics_open: bool,
    /// Set explicitly: no keys on a non-loopback address.
    pub insecure_no_auth: bool,
}

pub(super) fn resolve(
    layers: &[(&str, ConfigLayer)],
    http_bind: SocketAddr,
    grpc_listen: Option<SocketAddr>,
) -> Result<AccessConfig, ConfigError> {
    let mut entries = Vec::new();
    for (src, layer) in layers {
        for (i, k) in layer.auth.keys.iter().flatten().enumerate() {
            let bad = |reason: String| ConfigError {
                field: format!("auth.keys[{i}]"),
                source_name: src.to_string(),
                reason,
            };
            let name = k.name.clone().unwrap_or_else(|| format!("key-{}", i + 1));
            let role = Role::parse(&k.role).ok_or_else(|| {
                bad(format!(
                    "role {:?} is not reader, operator or admin",
                    k.role
                ))
            })?;
            let entry = match (&k.sha256, &k.secret) {
                (Some(hex), _) => KeyEntry::from_digest(&name, role, hex),
                (None, Some(secret)) => KeyEntry::from_secret(&name, role, secret),
                (None, None) => {
                    return Err(bad(
                        "needs sha256 (the key's SHA-256; `perdure-node key` prints it)".into(),
                    ));
                }
            }
            .map_err(|e| bad(e.to_string()))?;
            entries.push(entry);
        }
    }
    let metrics_open = pick(layers, |l| l.auth.metrics_open.as_ref()).is_none_or(|(v, _)| *v);
    let insecure = pick(layers, |l| l.auth.insecure_no_auth.as_ref()).is_some_and(|(v, _)| *v);
    let keys = ApiKeys::new(entries);
    if keys.is_empty() && !insecure {
        let public = std::iter::once(("http.bind", http_bind))
            .chain(grpc_listen.map(|g| ("grpc.listen", g)))
            .find(|(_, a)| !a.ip().is_loopback());
        if let Some((field, addr)) = public {
            return Err(ConfigError {
                field: "auth.keys".into(),
                source_name: "merged configuration".into(),
                reason: format!(
                    "{field} is {addr}, not a loopback address, and no API key is configured: \
                     anyone who reaches it could drive every instance. Give keys \
                     (PERDURE_API_KEYS=operator:<key>, or [auth] keys in the file; \
                     `perdure-node key` makes one) or pass --insecure-no-auth \
                     (PERDURE_INSECURE_NO_AUTH=true) to serve without them"
                ),
            });
        }
    }
    Ok(AccessConfig {
        keys,
        metrics_open,
        insecure_no_auth: insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::super::NodeConfig;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ConfigLayer {
        ConfigLayer::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string()))).unwrap()
    }

    #[test]
    fn keys_from_the_file_and_the_environment_are_all_accepted() {
        let secret = "pd_0123456789abcdef0123456789";
        let file: ConfigLayer = toml::from_str(&format!(
            "[auth]\nkeys = [{{ name = \"ci\", role = \"reader\", sha256 = \"{}\" }}]\nmetrics_open = false",
            crate::access::hash_key(secret)
        ))
        .unwrap();
        let e = env(&[(
            "PERDURE_API_KEYS",
            "admin:pd_aaaaaaaaaaaaaaaaaaaaaaaa, operator:sha256:",
        )]);
        // The second entry's digest is empty: refused, naming the variable.
        let err = NodeConfig::resolve(&[("file", file.clone()), ("environment", e)]).unwrap_err();
        assert_eq!(err.field, "auth.keys[1]");
        assert!(err.reason.contains("sha256"), "{err}");

        let e = env(&[("PERDURE_API_KEYS", "admin:pd_aaaaaaaaaaaaaaaaaaaaaaaa")]);
        let c = NodeConfig::resolve(&[("file", file), ("environment", e)]).unwrap();
        assert_eq!(c.access.keys.len(), 2);
        assert_eq!(c.access.keys.role_of(secret), Some(Role::Reader));
        assert_eq!(
            c.access.keys.role_of("pd_aaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(Role::Admin)
        );
        assert!(!c.access.metrics_open);
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let e = env(&[("PERDURE_API_KEYS", "admin:pd_secret_aaaaaaaaaaaaaaaa")]);
        let text = format!("{e:?}");
        assert!(
            !text.contains("pd_secret") && text.contains("<redacted>"),
            "{text}"
        );
        let c = NodeConfig::resolve(&[("environment", e)]).unwrap();
        assert!(!format!("{c:?}").contains("pd_secret"));
    }

    #[test]
    fn a_secret_in_the_file_is_not_read() {
        let e = toml::from_str::<ConfigLayer>(
            "[auth]\nkeys = [{ role = \"admin\", secret = \"pd_aaaaaaaaaaaaaaaaaaaaaaaa\" }]",
        )
        .unwrap_err();
        assert!(e.to_string().contains("secret"), "{e}");
        let f: ConfigLayer = toml::from_str("[auth]\nkeys = [{ role = \"admin\" }]").unwrap();
        assert_eq!(
            NodeConfig::resolve(&[("file", f)]).unwrap_err().field,
            "auth.keys[0]"
        );
        let f: ConfigLayer =
            toml::from_str("[auth]\nkeys = [{ role = \"root\", sha256 = \"00\" }]").unwrap();
        let e = NodeConfig::resolve(&[("file", f)]).unwrap_err();
        assert!(e.reason.contains("root"), "{e}");
    }

    #[test]
    fn a_public_address_without_keys_is_refused_unless_told() {
        let public = env(&[("PERDURE_HTTP", "0.0.0.0:8080")]);
        let e = NodeConfig::resolve(&[("environment", public.clone())]).unwrap_err();
        assert_eq!(e.field, "auth.keys");
        assert!(e.reason.contains("--insecure-no-auth"), "{e}");
        let grpc = env(&[("PERDURE_GRPC_LISTEN", "0.0.0.0:4001")]);
        assert_eq!(
            NodeConfig::resolve(&[("environment", grpc)])
                .unwrap_err()
                .field,
            "auth.keys"
        );
        let told = env(&[
            ("PERDURE_HTTP", "0.0.0.0:8080"),
            ("PERDURE_INSECURE_NO_AUTH", "true"),
        ]);
        let c = NodeConfig::resolve(&[("environment", told)]).unwrap();
        assert!(c.access.keys.is_empty() && c.access.insecure_no_auth);
        let keyed = env(&[
            ("PERDURE_HTTP", "0.0.0.0:8080"),
            ("PERDURE_API_KEYS", "operator:pd_aaaaaaaaaaaaaaaaaaaaaaaa"),
        ]);
        assert!(NodeConfig::resolve(&[("environment", keyed)]).is_ok());
        // Loopback without keys: open, as before.
        assert!(NodeConfig::resolve(&[]).unwrap().access.keys.is_empty());
    }
}
