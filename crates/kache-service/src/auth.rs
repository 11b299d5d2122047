//! Who may do what: the plan token, the ingest token, and the namespaces
//! ingest may write.
//!
//! Two scopes. The *plan* scope asks for plans and reports on them
//! (`/v{1,2}/prefetch-plan`, `/v2/plan-feedback`); the *ingest* scope also
//! changes what everyone is offered (`/v2/manifests`, `/v2/shards/…`), and
//! only its feedback counts towards dropping a key (see
//! [`Caller::may_ingest`]).
//!
//! - `--token` alone (the seed's setup): that one token holds both scopes.
//! - `--token` and `--ingest-token`: the plan token plans and reports, and
//!   gets 403 on ingest; the ingest token holds both scopes.
//! - `--ingest-token` alone: plans and reports are anonymous, ingest is not.
//! - Neither: every route is anonymous (the seed's contract), which the
//!   service says at start and on `/healthz` (`auth: none`).
//!
//! A request without a token, or with one that is neither, gets 401 where a
//! token is needed. `--ingest-namespaces` restricts whoever holds the ingest
//! scope. Tokens are kept as blake3 hashes and compared in constant time.

use std::fmt;

use axum::http::{HeaderMap, header};

/// The namespaces ingest may write: comma-separated patterns where `*`
/// matches any run of characters (`*` alone: every namespace).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePatterns(Vec<String>);

impl NamespacePatterns {
    /// Parses `ci-*,main`. Blank entries are ignored, so an empty list
    /// admits nothing (ingest over HTTP is then off; the bucket scan is not
    /// affected). A pattern may use the characters of a namespace and `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let patterns: Vec<String> = text
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        for pattern in &patterns {
            let ok = pattern.len() <= 256
                && pattern.bytes().all(|b| {
                    b.is_ascii_alphanumeric()
                        || matches!(b, b'-' | b'_' | b'.' | b'+' | b'@' | b':' | b'*')
                });
            if !ok {
                return Err(format!(
                    "invalid namespace pattern {pattern:?}: use letters, digits, -_.+@: and * \
                     (comma-separated)"
                ));
            }
        }
        Ok(Self(patterns))
    }

    /// Whether a shard of `namespace` may be ingested.
    pub fn admits(&self, namespace: &str) -> bool {
        self.0.iter().any(|pattern| glob(pattern, namespace))
    }

    /// Whether build manifests may be ingested: they have no namespace and
    /// feed every namespace's history, so only the pattern `*` itself admits
    /// them.
    pub fn admits_history(&self) -> bool {
        self.0.iter().any(|pattern| pattern == "*")
    }
}

impl fmt::Display for NamespacePatterns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

/// `*` matches any run of characters (also none); everything else itself.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was, and where in the text its match ends so far.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = star {
            pi = star_pi + 1;
            ti = star_ti + 1;
            star = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// 401: no token, or not one of ours.
    Unauthenticated,
    /// 403: a token of ours that may not do this; the message says why.
    Forbidden(String),
}

/// What an accepted request may do beyond the route it was let into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// The caller holds the ingest scope. Only such callers' `unused`
    /// feedback counts towards dropping a key from everyone's plans: with
    /// one shared plan token, any laptop could otherwise report a key three
    /// times and take it away from every build.
    pub may_ingest: bool,
}

/// The configured tokens and namespace patterns.
pub struct Auth {
    plan: Option<blake3::Hash>,
    ingest: Option<blake3::Hash>,
    namespaces: NamespacePatterns,
}

impl Auth {
    pub fn new(plan: Option<&str>, ingest: Option<&str>, namespaces: NamespacePatterns) -> Self {
        let hash = |t: &str| blake3::hash(t.as_bytes());
        Self {
            plan: plan.map(hash),
            ingest: ingest.map(hash),
            namespaces,
        }
    }

    /// An auth with no token at all and every namespace admitted.
    #[cfg(test)]
    pub fn open() -> Self {
        Self::new(None, None, NamespacePatterns(vec!["*".into()]))
    }

    /// The mode `/healthz` reports: `none` (every route anonymous),
    /// `bearer` (one token for every route), `scoped` (a plan token and an
    /// ingest token), `ingest_only` (plans anonymous, ingest needs a token).
    pub fn mode(&self) -> &'static str {
        match (self.plan.is_some(), self.ingest.is_some()) {
            (false, false) => "none",
            (true, false) => "bearer",
            (true, true) => "scoped",
            (false, true) => "ingest_only",
        }
    }

    /// The namespaces ingest may write.
    pub fn namespaces(&self) -> &NamespacePatterns {
        &self.namespaces
    }

    /// The token that holds the ingest scope, if any is needed.
    fn ingest_scope(&self) -> Option<&blake3::Hash> {
        self.ingest.as_ref().or(self.plan.as_ref())
    }

    fn presented(headers: &HeaderMap) -> Option<blake3::Hash> {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|token| blake3::hash(token.as_bytes()))
    }

    /// The plan scope: plans and feedback.
    pub fn plan(&self, headers: &HeaderMap) -> Result<Caller, Denied> {
        let presented = Self::presented(headers);
        // blake3::Hash equality is constant-time.
        let holds_ingest = match (self.ingest_scope(), presented) {
            (None, _) => true,
            (Some(expected), Some(presented)) => presented == *expected,
            (Some(_), None) => false,
        };
        if holds_ingest {
            return Ok(Caller { may_ingest: true });
        }
        match (&self.plan, presented) {
            (None, _) => Ok(Caller { may_ingest: false }),
            (Some(expected), Some(presented)) if presented == *expected => {
                Ok(Caller { may_ingest: false })
            }
            _ => Err(Denied::Unauthenticated),
        }
    }

    /// The ingest scope, for a shard of `namespace` or (`None`) a build
    /// manifest.
    pub fn ingest(&self, headers: &HeaderMap, namespace: Option<&str>) -> Result<(), Denied> {
        if let Some(expected) = self.ingest_scope() {
            let presented = Self::presented(headers);
            if presented.is_none_or(|p| p != *expected) {
                let is_plan_token = self.ingest.is_some()
                    && self
                        .plan
                        .zip(presented)
                        .is_some_and(|(plan, presented)| plan == presented);
                return Err(if is_plan_token {
                    Denied::Forbidden(
                        "this token may ask for plans but not ingest: ingest needs the ingest \
                         token (KACHE_PLANNER_INGEST_TOKEN)"
                            .into(),
                    )
                } else {
                    Denied::Unauthenticated
                });
            }
        }
        let admitted = match namespace {
            Some(namespace) => self.namespaces.admits(namespace),
            None => self.namespaces.admits_history(),
        };
        if admitted {
            return Ok(());
        }
        let what = match namespace {
            Some(namespace) => format!("namespace {namespace:?}"),
            None => "build manifests (they feed every namespace; only the pattern * admits them)"
                .to_string(),
        };
        Err(Denied::Forbidden(format!(
            "ingest may not write {what}: KACHE_PLANNER_INGEST_NAMESPACES is {:?}",
            self.namespaces.to_string()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        headers.insert(header::AUTHORIZATION, value);
        headers
    }

    #[test]
    fn globs_match_whole_names_with_any_run_for_a_star() {
        for (pattern, text, expected) in [
            ("*", "", true),
            ("*", "ci-main", true),
            ("ci-*", "ci-main", true),
            ("ci-*", "ci-", true),
            ("ci-*", "xci-main", false),
            ("*-main", "ci-main", true),
            ("*-main", "ci-mainx", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("main", "main", true),
            ("main", "mainline", false),
            ("**", "x", true),
        ] {
            assert_eq!(glob(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn namespace_lists_parse_and_refuse_what_cannot_be_a_namespace() {
        let list = NamespacePatterns::parse(" ci-*, main ,,").unwrap();
        assert!(list.admits("ci-7") && list.admits("main") && !list.admits("dev"));
        assert!(!list.admits_history());
        assert!(NamespacePatterns::parse("*").unwrap().admits_history());
        assert!(!NamespacePatterns::parse("").unwrap().admits("x"));
        assert!(NamespacePatterns::parse("ci/*").is_err());
    }

    #[test]
    fn the_plan_token_plans_but_only_the_ingest_token_ingests() {
        let auth = Auth::new(
            Some("p"),
            Some("i"),
            NamespacePatterns::parse("ci-*").unwrap(),
        );
        assert_eq!(auth.mode(), "scoped");
        assert_eq!(auth.plan(&bearer("p")), Ok(Caller { may_ingest: false }));
        assert_eq!(auth.plan(&bearer("i")), Ok(Caller { may_ingest: true }));
        assert_eq!(auth.plan(&bearer("x")), Err(Denied::Unauthenticated));
        assert_eq!(auth.plan(&HeaderMap::new()), Err(Denied::Unauthenticated));
        assert!(matches!(
            auth.ingest(&bearer("p"), Some("ci-1")),
            Err(Denied::Forbidden(_))
        ));
        assert_eq!(
            auth.ingest(&bearer("x"), Some("ci-1")),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(auth.ingest(&bearer("i"), Some("ci-1")), Ok(()));
        assert!(matches!(
            auth.ingest(&bearer("i"), Some("prod")),
            Err(Denied::Forbidden(_))
        ));
        assert!(matches!(
            auth.ingest(&bearer("i"), None),
            Err(Denied::Forbidden(_))
        ));
    }

    #[test]
    fn one_token_holds_every_scope_and_none_leaves_every_route_open() {
        let all = NamespacePatterns::parse("*").unwrap();
        let single = Auth::new(Some("t"), None, all.clone());
        assert_eq!(single.mode(), "bearer");
        assert_eq!(single.plan(&bearer("t")), Ok(Caller { may_ingest: true }));
        assert_eq!(single.ingest(&bearer("t"), None), Ok(()));
        assert_eq!(
            single.ingest(&bearer("p"), None),
            Err(Denied::Unauthenticated)
        );
        let open = Auth::open();
        assert_eq!(open.mode(), "none");
        assert_eq!(
            open.plan(&HeaderMap::new()),
            Ok(Caller { may_ingest: true })
        );
        assert_eq!(open.ingest(&HeaderMap::new(), Some("x")), Ok(()));
        let ingest_only = Auth::new(None, Some("i"), all);
        assert_eq!(ingest_only.mode(), "ingest_only");
        assert_eq!(
            ingest_only.plan(&HeaderMap::new()),
            Ok(Caller { may_ingest: false })
        );
        assert_eq!(
            ingest_only.ingest(&HeaderMap::new(), None),
            Err(Denied::Unauthenticated)
        );
    }
}
