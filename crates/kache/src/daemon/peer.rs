//! Who is asking: the daemon checks every connection's peer and resolves
//! the caller's credentials itself, so no secret ever travels on the
//! socket (see `protocol.rs`).
//!
//! A connection is served only when `SO_PEERCRED` names this daemon's own
//! uid. The credentials then come from the caller's process:
//! `/proc/<pid>/environ` (the environment it was started with) and
//! `/proc/<pid>/cwd`, loaded exactly as the caller loads its configuration
//! ([`crate::config::Config::load_in`]). They are used only when that
//! resolution names the very remote (and planner endpoint) the request
//! names; otherwise the daemon uses the credentials it already holds for
//! that remote, or none.

use std::collections::HashMap;
use std::path::PathBuf;

use super::planner::PlannerSettings;
use super::protocol::{RemoteSettings, Request};
use crate::config::{Config, Env};

/// The process at the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub uid: u32,
    pub pid: i32,
}

impl Peer {
    /// The peer of a connected stream.
    pub fn of(stream: &tokio::net::UnixStream) -> std::io::Result<Self> {
        let (uid, pid) = crate::owner::peer_cred(stream)?;
        Ok(Self { uid, pid })
    }

    /// Whether the peer runs as the user this daemon runs as.
    pub fn is_same_user(&self) -> bool {
        self.uid == crate::owner::my_uid()
    }

    /// The configuration the peer resolved for itself, read from its
    /// environment and working directory; `None` when either cannot be
    /// read (the process is gone, `/proc` is hidden) or does not load.
    pub fn config(&self) -> Option<Config> {
        if self.pid <= 0 || !self.is_same_user() {
            return None;
        }
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        let cwd: PathBuf = std::fs::read_link(format!("/proc/{}/cwd", self.pid)).ok()?;
        let vars: HashMap<String, String> = environ
            .split(|b| *b == 0)
            .filter_map(|pair| std::str::from_utf8(pair).ok())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_in(&Env::captured(vars), &cwd).ok()
    }
}

/// Puts the credentials back into a request that arrived without them:
/// from `peer`'s own configuration when it names the same remote, else
/// from `known` (the settings this daemon already holds for that remote
/// id, if the same remote), else the request stays without.
pub fn with_credentials(
    request: Request,
    peer: Option<&Config>,
    known: impl Fn(&RemoteSettings) -> Option<RemoteSettings>,
) -> Request {
    let from_peer = |asked: &RemoteSettings| -> Option<RemoteSettings> {
        let config = peer?;
        let remote = config.remote.as_ref()?;
        asked.with_secrets_of(&RemoteSettings::new(remote, config.compression_level))
    };
    let fill = |asked: RemoteSettings| -> RemoteSettings {
        from_peer(&asked)
            .or_else(|| known(&asked).and_then(|k| asked.with_secrets_of(&k)))
            .unwrap_or(asked)
    };
    match request {
        Request::Upload { remote, keys } => Request::Upload {
            remote: fill(remote),
            keys,
        },
        Request::Fetch {
            remote,
            crate_name,
            pre_key,
            deadline_ms,
        } => Request::Fetch {
            remote: fill(remote),
            crate_name,
            pre_key,
            deadline_ms,
        },
        Request::BuildStart {
            remote,
            cargo_pid,
            lockfile,
            planner,
            namespace,
            identity,
            wait,
        } => Request::BuildStart {
            remote: fill(remote),
            cargo_pid,
            lockfile,
            planner: planner.map(|asked| planner_token(asked, peer)),
            namespace,
            identity,
            wait,
        },
        other => other,
    }
}

/// The planner's token from the peer's own configuration, when it names
/// the same endpoint: a token is never sent anywhere the caller's own
/// configuration would not send it.
fn planner_token(asked: PlannerSettings, peer: Option<&Config>) -> PlannerSettings {
    let own = peer.and_then(|c| PlannerSettings::from_config(&c.planner));
    match own {
        Some(own) if own.endpoint == asked.endpoint => PlannerSettings {
            token: own.token,
            ..asked
        },
        _ => PlannerSettings {
            token: None,
            ..asked
        },
    }
}

/// Whether a request needs the caller's credentials (anything that may
/// touch the remote or the planner).
pub fn needs_credentials(request: &Request) -> bool {
    matches!(
        request,
        Request::Upload { .. } | Request::Fetch { .. } | Request::BuildStart { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configuration a caller with these variables resolves.
    fn caller(vars: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let mut env: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("XDG_CONFIG_HOME".into(), dir.path().display().to_string());
        Config::load_in(&Env::captured(env), dir.path()).unwrap()
    }

    fn build_start(config: &Config) -> Request {
        let remote = config.remote.as_ref().unwrap();
        Request::BuildStart {
            remote: RemoteSettings::new(remote, config.compression_level),
            cargo_pid: 1,
            lockfile: "Cargo.lock".into(),
            planner: PlannerSettings::from_config(&config.planner),
            namespace: None,
            identity: None,
            wait: false,
        }
        .without_secrets()
    }

    const CALLER: &[(&str, &str)] = &[
        ("KACHE_S3_BUCKET", "b"),
        ("KACHE_S3_ENDPOINT", "http://127.0.0.1:9"),
        ("KACHE_S3_ACCESS_KEY", "AK"),
        ("KACHE_S3_SECRET_KEY", "SK"),
        ("KACHE_PLANNER_ENDPOINT", "http://planner"),
        ("KACHE_PLANNER_TOKEN", "TOKEN"),
    ];

    fn secrets_of(request: &Request) -> (Option<String>, Option<String>) {
        let Request::BuildStart {
            remote, planner, ..
        } = request
        else {
            panic!("a build start");
        };
        let kache_remote::Backend::S3(spec) = &remote.backend else {
            panic!("s3");
        };
        (
            spec.secret_key.clone(),
            planner.as_ref().and_then(|p| p.token.clone()),
        )
    }

    #[test]
    fn the_callers_own_credentials_fill_a_request_for_its_own_remote() {
        let config = caller(CALLER);
        let filled = with_credentials(build_start(&config), Some(&config), |_| None);
        assert_eq!(
            secrets_of(&filled),
            (Some("SK".into()), Some("TOKEN".into()))
        );
    }

    #[test]
    fn a_request_naming_another_remote_or_planner_gets_no_credentials() {
        let config = caller(CALLER);
        let mut elsewhere: Vec<(&str, &str)> = CALLER.to_vec();
        elsewhere[1] = ("KACHE_S3_ENDPOINT", "http://elsewhere:9");
        elsewhere[4] = ("KACHE_PLANNER_ENDPOINT", "http://elsewhere");
        let asked = build_start(&caller(&elsewhere));
        let filled = with_credentials(asked, Some(&config), |_| None);
        assert_eq!(secrets_of(&filled), (None, None));
    }

    #[test]
    fn a_peer_of_another_uid_is_never_read() {
        let peer = Peer {
            uid: crate::owner::my_uid().wrapping_add(1),
            pid: std::process::id() as i32,
        };
        assert!(!peer.is_same_user());
        assert!(peer.config().is_none());
        let me = Peer {
            uid: crate::owner::my_uid(),
            pid: std::process::id() as i32,
        };
        assert!(me.is_same_user());
        assert!(me.config().is_some(), "this test process's own settings");
    }
}
