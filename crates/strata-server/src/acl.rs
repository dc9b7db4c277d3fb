//! Users and what they may do: the `default` user (`requirepass`) and the ACL users of
//! `[server.users.NAME]`, each with SHA-256 password digests, namespace globs and a
//! [`Permission`]. Every secret is compared in constant time; an unknown user costs the same
//! hash and comparison as a known one, so timing does not tell which names exist.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use strata::config::{Permission, ServerConfig};
use strata_core::glob::Glob;

use crate::commands::{Cmd, CommandSpec};

/// A user as the server checks it.
#[derive(Debug)]
pub struct User {
    /// The name `AUTH` and `ACL WHOAMI` use.
    pub name: String,
    digests: Vec<[u8; 32]>,
    /// No password needed (the default user when no `requirepass` is set).
    nopass: bool,
    namespaces: Vec<Glob>,
    /// The globs as configured, for `ACL LIST`.
    namespace_src: Vec<String>,
    /// What it may do.
    pub permission: Permission,
    enabled: bool,
    /// Admin on every namespace: commands skip the permission check (computed once).
    unrestricted: bool,
}

impl User {
    /// Whether the user may touch namespace `ns`.
    pub fn allows_namespace(&self, ns: &str) -> bool {
        self.namespaces.iter().any(|g| g.matches(ns.as_bytes()))
    }

    /// Whether logging in as this user takes a password (false for the password-less
    /// default user, which accepts any password as Redis's `nopass` does).
    pub fn has_password(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether the user may touch every namespace (an admin or a `*` user).
    pub fn all_namespaces(&self) -> bool {
        self.namespaces.iter().any(Glob::matches_everything)
    }

    /// Whether every command is allowed on every namespace (an admin with `*`): the
    /// per-command check is skipped for it.
    pub fn unrestricted(&self) -> bool {
        self.unrestricted
    }

    fn new(
        name: String,
        digests: Vec<[u8; 32]>,
        nopass: bool,
        namespace_src: Vec<String>,
        permission: Permission,
        enabled: bool,
    ) -> Self {
        let namespaces: Vec<Glob> = namespace_src
            .iter()
            .filter_map(|g| Glob::new(g.as_bytes()).ok())
            .collect();
        let unrestricted =
            permission == Permission::Admin && namespaces.iter().any(Glob::matches_everything);
        User {
            name,
            digests,
            nopass,
            namespaces,
            namespace_src,
            permission,
            enabled,
            unrestricted,
        }
    }

    /// The user's `ACL LIST` line, in Redis's shape: `user NAME on|off #DIGEST… ~GLOB…
    /// +@CATEGORY`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "user {} {}",
            self.name,
            if self.enabled { "on" } else { "off" }
        );
        if self.nopass {
            out.push_str(" nopass");
        }
        for d in &self.digests {
            out.push_str(" #");
            out.push_str(&hex(d));
        }
        for g in &self.namespace_src {
            out.push_str(" ~");
            out.push_str(g);
        }
        out.push_str(match self.permission {
            Permission::Read => " -@all +@read +@connection",
            Permission::ReadWrite => " -@all +@read +@write +@connection",
            Permission::Admin => " +@all",
        });
        out
    }
}

fn hex(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// SHA-256 of a password.
pub fn digest(password: &[u8]) -> [u8; 32] {
    Sha256::digest(password).into()
}

/// Equality of two digests in constant time (no early exit).
pub fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Equality of two secrets of any length in constant time for a given length pair: both are
/// hashed first, so neither the position of the first difference nor the secret's length
/// shows in the timing.
pub fn ct_eq_secret(given: &[u8], expected: &[u8]) -> bool {
    ct_eq(&digest(given), &digest(expected))
}

/// Every user of one server.
#[derive(Debug)]
pub struct Acl {
    users: BTreeMap<String, Arc<User>>,
}

impl Acl {
    /// The users of `server`: `default` (with `requirepass`, or password-less unless ACL
    /// users are defined) and every `[server.users.NAME]`.
    pub fn from_config(server: &ServerConfig) -> Self {
        let mut users = BTreeMap::new();
        for (name, u) in &server.users {
            users.insert(
                name.clone(),
                Arc::new(User::new(
                    name.clone(),
                    u.password_sha256.iter().filter_map(|h| unhex(h)).collect(),
                    false,
                    u.namespaces.clone(),
                    u.permission,
                    u.enabled,
                )),
            );
        }
        let mut acl = Acl { users };
        acl.set_requirepass(server.requirepass.as_deref());
        acl
    }

    /// Sets (or clears) the default user's password (`CONFIG SET requirepass`). With no
    /// password, the default user is password-less unless ACL users are defined, in which
    /// case it is disabled.
    pub fn set_requirepass(&mut self, password: Option<&str>) {
        let others = self.users.keys().any(|n| n != "default");
        let (digests, nopass, enabled) = match password {
            Some(p) => (vec![digest(p.as_bytes())], false, true),
            None => (Vec::new(), true, !others),
        };
        self.users.insert(
            "default".into(),
            Arc::new(User::new(
                "default".into(),
                digests,
                nopass,
                vec!["*".into()],
                Permission::Admin,
                enabled,
            )),
        );
    }

    /// The user a new connection starts as: the default user when it needs no password.
    pub fn initial_user(&self) -> Option<Arc<User>> {
        self.users
            .get("default")
            .filter(|u| u.enabled && u.nopass)
            .cloned()
    }

    /// Whether any user has a password (so that `AUTH` means something).
    pub fn any_password(&self) -> bool {
        self.users.values().any(|u| !u.digests.is_empty())
    }

    /// The user `name` if `password` is one of its passwords and it is enabled. Always hashes
    /// the password and compares it with at least one digest, whether the user exists or not.
    pub fn authenticate(&self, name: &str, password: &[u8]) -> Option<Arc<User>> {
        let given = digest(password);
        let user = self.users.get(name);
        let dummy = [0u8; 32];
        let mut ok = false;
        match user {
            Some(u) if !u.digests.is_empty() => {
                for d in &u.digests {
                    ok |= ct_eq(&given, d);
                }
            }
            Some(u) if u.nopass => {
                // Redis accepts any password for a nopass user.
                let _ = ct_eq(&given, &dummy);
                ok = true;
            }
            _ => {
                let _ = ct_eq(&given, &dummy);
            }
        }
        user.filter(|u| ok && u.enabled).cloned()
    }

    /// A user by name.
    pub fn get(&self, name: &str) -> Option<Arc<User>> {
        self.users.get(name).cloned()
    }

    /// Every user, by name.
    pub fn users(&self) -> impl Iterator<Item = &Arc<User>> {
        self.users.values()
    }
}

/// What a command needs of the user running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing beyond being logged in (PING, SELECT, HELLO, CLIENT SETNAME, …).
    Connection,
    /// Read access to the selected namespace.
    Read,
    /// Write access to the selected namespace.
    Write,
    /// The admin permission (FLUSHALL, CONFIG, CLIENT LIST/KILL, ACL LIST/USERS, SLOWLOG).
    Admin,
}

/// What `spec`, called with `args`, needs.
pub fn need(spec: &CommandSpec, args: &[Bytes]) -> Need {
    let sub = |name: &str| {
        args.get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    };
    match spec.id {
        Cmd::Auth
        | Cmd::Hello
        | Cmd::Quit
        | Cmd::Reset
        | Cmd::Ping
        | Cmd::Echo
        | Cmd::Select
        | Cmd::Command
        | Cmd::Time => Need::Connection,
        Cmd::Client if sub("LIST") || sub("KILL") => Need::Admin,
        Cmd::Client => Need::Connection,
        Cmd::Acl if sub("WHOAMI") || sub("CAT") => Need::Connection,
        // SLOWLOG shows every client's commands, arguments included.
        Cmd::Acl | Cmd::Flushall | Cmd::Config | Cmd::Slowlog | Cmd::Latency => Need::Admin,
        // SCRIPT KILL stops every tenant's scripts, SCRIPT FLUSH empties the node's cache.
        Cmd::Script if sub("KILL") || sub("FLUSH") => Need::Admin,
        // SCRIPT LOAD keeps a script in the node's cache for good: a read-only user could
        // fill it and refuse everyone's `SCRIPT LOAD` (review, 2026-12-05); Redis's `@read`
        // users have no `SCRIPT` either.
        Cmd::Script if sub("LOAD") => Need::Write,
        // A message reaches other clients: a read-only user only listens.
        Cmd::Publish | Cmd::Spublish => Need::Write,
        _ if spec.write => Need::Write,
        _ => Need::Read,
    }
}

/// Whether `user` may run `spec` with `args` on namespace `ns`: `Err` holds the `NOPERM`
/// reply, worded as Redis 7.2 words it.
pub fn permit(user: &User, spec: &CommandSpec, args: &[Bytes], ns: &str) -> Result<(), String> {
    // Channels are global, not namespaced: a user confined to some namespaces gets none, as
    // a Redis 7 user gets none until `&channel` rules grant them (`resetchannels`); a user
    // of every namespace has them all (publishing needs `readwrite`, below).
    if spec.group == "pubsub" && !user.all_namespaces() {
        return Err(
            "NOPERM this user has no permissions to access one of the channels used as arguments"
                .into(),
        );
    }
    // Tracking notices are global too: a `BCAST` client hears of every key written in any
    // namespace, and a default-mode client of a key of the same name written in another
    // (the table is by key name). A user confined to some namespaces may not turn it on
    // (an adversarial review read other tenants' key names through it, 2026-12-04).
    let arg = |i: usize, name: &str| {
        args.get(i)
            .is_some_and(|a| a.eq_ignore_ascii_case(name.as_bytes()))
    };
    if spec.id == Cmd::Client
        && arg(1, "TRACKING")
        && arg(2, "ON")
        && !user.namespaces.iter().any(Glob::matches_everything)
    {
        return Err(
            "NOPERM this user has no permissions to track keys: invalidation notices name the keys of every namespace"
                .into(),
        );
    }
    // `SELECT name` opens a namespace and counts it against `server.max_namespaces` while
    // selected: a user may open only its own (one confined to `app*` held the table full of
    // others with 520 connections, review 2026-12-05). A database number opens nothing.
    if spec.id == Cmd::Select
        && let Some(name) = args.get(1)
        && strata_core::ops::parse_int(name).is_none()
        && !user.allows_namespace(&String::from_utf8_lossy(name))
    {
        return Err("NOPERM this user has no permissions to select that namespace".into());
    }
    let need = need(spec, args);
    let level_ok = match need {
        Need::Connection => true,
        Need::Read => true,
        Need::Write => user.permission >= Permission::ReadWrite,
        Need::Admin => user.permission == Permission::Admin,
    };
    if !level_ok {
        return Err(format!(
            "NOPERM User {} has no permissions to run the '{}' command",
            user.name,
            spec.name.to_ascii_lowercase()
        ));
    }
    if matches!(need, Need::Read | Need::Write) && !user.allows_namespace(ns) {
        return Err("NOPERM No permissions to access a key".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use strata::config::UserConfig;

    fn server(pass: Option<&str>, users: &[(&str, &str, &[&str], Permission)]) -> ServerConfig {
        let mut s = ServerConfig {
            requirepass: pass.map(str::to_owned),
            ..ServerConfig::default()
        };
        for (name, pw, ns, perm) in users {
            s.users.insert(
                (*name).into(),
                UserConfig {
                    password_sha256: vec![hex(&digest(pw.as_bytes()))],
                    namespaces: ns.iter().map(|n| (*n).into()).collect(),
                    permission: *perm,
                    enabled: true,
                },
            );
        }
        s
    }

    #[test]
    fn default_user_is_open_only_without_password_or_users() {
        assert!(
            Acl::from_config(&server(None, &[]))
                .initial_user()
                .is_some()
        );
        assert!(
            Acl::from_config(&server(Some("pw"), &[]))
                .initial_user()
                .is_none()
        );
        let with_users = server(None, &[("app", "pw", &["app:*"], Permission::ReadWrite)]);
        let acl = Acl::from_config(&with_users);
        assert!(acl.initial_user().is_none());
        assert!(acl.authenticate("default", b"anything").is_none());
    }

    #[test]
    fn users_log_in_with_their_password_only() {
        let acl = Acl::from_config(&server(
            Some("rootpw"),
            &[("app", "apppw", &["app:*"], Permission::Read)],
        ));
        assert_eq!(acl.authenticate("app", b"apppw").unwrap().name, "app");
        assert!(acl.authenticate("app", b"rootpw").is_none());
        assert!(acl.authenticate("nobody", b"apppw").is_none());
        assert_eq!(
            acl.authenticate("default", b"rootpw").unwrap().permission,
            Permission::Admin
        );
        let app = acl.get("app").unwrap();
        assert!(app.allows_namespace("app:orders"));
        assert!(!app.allows_namespace("db0"));
        assert!(!app.all_namespaces() && !app.unrestricted());
        assert!(acl.get("default").unwrap().unrestricted());
        assert!(
            app.describe().starts_with("user app on #"),
            "{}",
            app.describe()
        );
    }

    #[test]
    fn constant_time_comparisons_agree_with_equality() {
        assert!(ct_eq_secret(b"abc", b"abc"));
        assert!(!ct_eq_secret(b"abc", b"abd"));
        assert!(!ct_eq_secret(b"abc", b"abcd"));
        assert!(!ct_eq_secret(b"", b"a"));
        assert_eq!(unhex(&hex(&digest(b"x"))), Some(digest(b"x")));
        assert_eq!(unhex("zz"), None);
    }
}
