//! Who may talk to a node, and over what: TLS certificates, ACL users, the admin port's
//! credential, protected mode. The server enforces them; this module only describes and
//! validates them (an embedded node has no listeners and ignores them).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, NodeConfig, invalid};

/// TLS on a listener: a certificate chain and its key, PEM files; with `ca_file`, clients
/// must present a certificate signed by that CA (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM CA certificates that client (or peer) certificates must chain to. Required for
    /// the cluster's RPC port (both ends present certificates); optional for RESP and admin.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

/// TLS per port of `strata serve` (`[server.tls]`): one certificate, turned on per listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// The certificate, key and optional client CA.
    #[serde(flatten)]
    pub files: TlsConfig,
    /// TLS on the Redis-protocol listener (default true).
    #[serde(default = "yes")]
    pub resp: bool,
    /// HTTPS on the admin listener (default true).
    #[serde(default = "yes")]
    pub admin: bool,
}

fn yes() -> bool {
    true
}

/// What an ACL user may do, from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    /// Read commands (GET, MGET, TTL, SCAN, …) in its namespaces.
    Read,
    /// Read and write commands (SET, DEL, FLUSHDB, Strata's invalidations, …) in its
    /// namespaces.
    ReadWrite,
    /// Everything: FLUSHALL, CONFIG SET, CLIENT LIST/KILL, ACL LIST, any namespace's
    /// invalidation, the admin port's actions.
    Admin,
}

impl Permission {
    /// As written in the config and shown by `ACL LIST`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::ReadWrite => "readwrite",
            Permission::Admin => "admin",
        }
    }
}

/// One ACL user (`[server.users.NAME]`), the Redis 6 way where it fits: `AUTH name password`
/// or `HELLO 3 AUTH name password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// SHA-256 digests of the accepted passwords, 64 hex digits each, as Redis stores them
    /// (`printf %s 'password' | sha256sum`). Plain passwords never appear in the config.
    pub password_sha256: Vec<String>,
    /// Namespaces the user may touch, as Redis globs (`app:*`, `db0`); `*` is every one.
    pub namespaces: Vec<String>,
    /// What it may do there.
    pub permission: Permission,
    /// A disabled user cannot log in (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
}

/// Whether `addr` (an `IP:port` the config has validated) listens on loopback only.
pub fn is_loopback(addr: &str) -> bool {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false)
}

impl NodeConfig {
    /// Whether clients must authenticate on the RESP port: a `requirepass`, or ACL users
    /// (which disable the password-less default user).
    pub fn resp_auth_configured(&self) -> bool {
        self.server.requirepass.is_some() || !self.server.users.is_empty()
    }

    /// Whether the admin port's actions need a credential: an admin token, or whenever the
    /// RESP port needs one (a `requirepass`, or ACL users — admin or not: a node whose
    /// tenants must log in must not let anyone flush them over HTTP). With ACL users and
    /// no admin credential ([`NodeConfig::admin_credential_exists`]), the port's actions
    /// are refused to everyone.
    pub fn admin_auth_configured(&self) -> bool {
        self.server.admin_token.is_some() || self.resp_auth_configured()
    }

    /// Whether some credential opens the admin port: an admin token, a `requirepass`, or an
    /// enabled ACL user with the admin permission.
    pub fn admin_credential_exists(&self) -> bool {
        self.server.admin_token.is_some()
            || self.server.requirepass.is_some()
            || self
                .server
                .users
                .values()
                .any(|u| u.enabled && u.permission == Permission::Admin)
    }

    /// Protected mode, as Redis has it: a server listening beyond loopback without
    /// authentication would hand the cache to anyone who can reach it. Fails with the fix
    /// in the message; `server.protected_mode = false` turns the check off.
    pub fn check_protected_mode(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if !s.protected_mode {
            return Ok(());
        }
        if !is_loopback(&s.resp_listen) && !self.resp_auth_configured() {
            return Err(invalid(
                "server.protected_mode",
                format!(
                    "server.resp_listen = {:?} accepts clients beyond loopback, and no authentication is configured. \
                     Set server.requirepass (or define [server.users.NAME]), or listen on 127.0.0.1, \
                     or set server.protected_mode = false if the network itself is trusted",
                    s.resp_listen
                ),
            ));
        }
        if let Some(addr) = &s.cluster_listen
            && !is_loopback(addr)
            && !self.resp_auth_configured()
        {
            return Err(invalid(
                "server.protected_mode",
                format!(
                    "server.cluster_listen = {addr:?} accepts clients beyond loopback, and no authentication is configured. \
                     Set server.requirepass (or define [server.users.NAME]), or listen on 127.0.0.1, \
                     or set server.protected_mode = false if the network itself is trusted"
                ),
            ));
        }
        if !is_loopback(&s.admin_listen) && !self.admin_auth_configured() {
            return Err(invalid(
                "server.protected_mode",
                format!(
                    "server.admin_listen = {:?} accepts requests beyond loopback, and no credential is configured. \
                     Set server.admin_token (or server.requirepass), or listen on 127.0.0.1, \
                     or set server.protected_mode = false if the network itself is trusted",
                    s.admin_listen
                ),
            ));
        }
        Ok(())
    }

    pub(super) fn validate_security(&self) -> Result<(), ConfigError> {
        let s = &self.server;
        if s.admin_token.as_deref().is_some_and(|t| t.len() < 16) {
            return Err(invalid(
                "server.admin_token",
                "must be at least 16 bytes (a random token: `openssl rand -hex 16`)",
            ));
        }
        for (name, u) in &s.users {
            let field = |f: &str| format!("server.users.{name}.{f}");
            if name.is_empty() || name.len() > 128 || name.bytes().any(|b| b <= b' ') {
                return Err(invalid(
                    format!("server.users.{name:?}"),
                    "a user name is 1 to 128 bytes without spaces or control characters",
                ));
            }
            if name == "default" {
                return Err(invalid(
                    "server.users.default",
                    "the default user is the one server.requirepass sets; name this user otherwise",
                ));
            }
            if u.password_sha256.is_empty() {
                return Err(invalid(
                    field("password_sha256"),
                    "give at least one SHA-256 digest",
                ));
            }
            for h in &u.password_sha256 {
                if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid(
                        field("password_sha256"),
                        format!("{h:?} is not 64 hex digits (printf %s 'password' | sha256sum)"),
                    ));
                }
            }
            if u.permission == Permission::Admin && !u.namespaces.iter().any(|n| n == "*") {
                return Err(invalid(
                    field("namespaces"),
                    "an admin user acts on every namespace (FLUSHALL, CONFIG, the admin port): give it [\"*\"], or make it readwrite",
                ));
            }
            if u.namespaces.is_empty() || u.namespaces.iter().any(|n| n.is_empty()) {
                return Err(invalid(
                    field("namespaces"),
                    "name at least one namespace glob (\"*\" for every namespace)",
                ));
            }
        }
        for (field, tls) in [
            ("server.tls", s.tls.as_ref().map(|t| &t.files)),
            ("cluster.tls", self.cluster.tls.as_ref()),
        ] {
            let Some(t) = tls else { continue };
            for (f, path) in [
                ("cert_file", Some(&t.cert_file)),
                ("key_file", Some(&t.key_file)),
                ("ca_file", t.ca_file.as_ref()),
            ] {
                if let Some(p) = path
                    && !p.is_file()
                {
                    return Err(invalid(
                        format!("{field}.{f}"),
                        format!("{} is not a readable file", p.display()),
                    ));
                }
            }
        }
        if self.cluster.tls.is_some()
            && !matches!(
                rustls_pki_types::ServerName::try_from(self.node.name.as_str()),
                Ok(rustls_pki_types::ServerName::DnsName(_))
            )
        {
            return Err(invalid(
                "node.name",
                "must be a DNS name when cluster.tls is set: peers check it against the certificate",
            ));
        }
        if let Some(t) = &self.cluster.tls
            && t.ca_file.is_none()
        {
            return Err(invalid(
                "cluster.tls.ca_file",
                "required: members authenticate each other's certificates (mutual TLS)",
            ));
        }
        Ok(())
    }
}

/// The configured users, for code that only needs to read them.
pub type Users = BTreeMap<String, UserConfig>;
