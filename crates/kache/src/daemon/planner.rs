//! The planner client: at a build's start the daemon tells `kache-service`
//! what the build is about to need and gets back the artifacts worth
//! fetching first.
//!
//! The intent lists crate names in the order the build needs them
//! (dependencies first, from the resolved graph in `Cargo.lock`), the
//! namespace and the `Cargo.lock` packages. The plan is untrusted: every
//! candidate must have a well-formed key and crate name, and anything that
//! goes wrong (an error, `KACHE_PLANNER_TIMEOUT_MS`, a malformed plan) is
//! the `Cargo.lock` fallback, exactly like `use_fallback`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kache_core::manifest::Identity;
use kache_core::plan::{Budget, BuildIntent, Disposition, PlanCandidate, PrefetchPlan};
use kache_remote::layout::{is_valid_crate_name, is_valid_key};
use serde::{Deserialize, Serialize};

/// Where the planner is, as the caller resolved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannerSettings {
    pub endpoint: String,
    pub token: Option<String>,
    pub timeout_ms: u64,
}

impl PlannerSettings {
    /// The planner of `config`: only when an endpoint is set (a token
    /// alone does nothing).
    pub fn from_config(config: &crate::config::PlannerConfig) -> Option<Self> {
        Some(Self {
            endpoint: config.endpoint.clone().filter(|e| !e.is_empty())?,
            token: config.token.clone(),
            timeout_ms: config.timeout_ms,
        })
    }
}

/// `{endpoint}/v2/prefetch-plan`, unless the endpoint already names a plan route.
pub fn plan_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if trimmed.ends_with("/v1/prefetch-plan") || trimmed.ends_with("/v2/prefetch-plan") {
        trimmed.to_string()
    } else {
        format!("{trimmed}/v2/prefetch-plan")
    }
}

/// The daemon's own limit, whatever a plan says: it asks for no more in
/// the intent's budget and fetches no more than this many candidates.
pub const MAX_PLAN_CANDIDATES: usize = 2000;

/// What the daemon will do with a plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Fetch these, in order; report on them under `plan_id`.
    Execute {
        plan_id: String,
        candidates: Vec<PlanCandidate>,
    },
    /// Prefetch by `Cargo.lock`, and why.
    Fallback(String),
    Nothing,
}

/// Asks the planner; never fails: every problem is a fallback with its reason.
pub async fn decide(settings: &PlannerSettings, intent: &BuildIntent) -> Decision {
    match ask(settings, intent).await {
        Ok(plan) => match plan.disposition {
            Disposition::Execute => match validated(plan.candidates) {
                Ok(candidates) => Decision::Execute {
                    plan_id: plan.plan_id,
                    candidates,
                },
                Err(err) => Decision::Fallback(format!("malformed plan: {err:#}")),
            },
            Disposition::UseFallback => Decision::Fallback(
                plan.reason
                    .unwrap_or_else(|| "the planner answered use_fallback".into()),
            ),
            Disposition::DoNothing => Decision::Nothing,
        },
        Err(err) => Decision::Fallback(format!("{err:#}")),
    }
}

async fn ask(settings: &PlannerSettings, intent: &BuildIntent) -> Result<PrefetchPlan> {
    let url = plan_url(&settings.endpoint);
    let response = post_json(settings, &url, serde_json::to_vec(intent)?).await?;
    let body = response.bytes().await.context("reading the plan")?;
    serde_json::from_slice(&body).with_context(|| format!("{url} sent a malformed plan"))
}

/// POSTs a JSON body to the planner with its token, within its timeout;
/// anything but a 2xx is an error.
async fn post_json(
    settings: &PlannerSettings,
    url: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response> {
    let timeout = Duration::from_millis(settings.timeout_ms.max(1));
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .context("building the planner client")?;
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    if let Some(token) = &settings.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("posting to {url}"))?;
    let status = response.status();
    if !status.is_success() {
        bail!("{url} answered {status}");
    }
    Ok(response)
}

/// `{endpoint}/v2/plan-feedback`, beside the plan route.
pub fn feedback_url(endpoint: &str) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    let base = trimmed
        .strip_suffix("/v1/prefetch-plan")
        .or_else(|| trimmed.strip_suffix("/v2/prefetch-plan"))
        .unwrap_or(trimmed);
    format!("{base}/v2/plan-feedback")
}

/// The body of `POST /v2/plan-feedback`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feedback {
    pub plan_id: String,
    pub used: Vec<String>,
    pub unused: Vec<String>,
    pub late: Vec<String>,
}

/// Sends one plan's feedback, within the planner timeout.
pub async fn send_feedback(settings: &PlannerSettings, feedback: &Feedback) -> Result<()> {
    let url = feedback_url(&settings.endpoint);
    post_json(settings, &url, serde_json::to_vec(feedback)?).await?;
    Ok(())
}

/// The candidates, each checked; duplicates dropped, order kept.
fn validated(candidates: Vec<PlanCandidate>) -> Result<Vec<PlanCandidate>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for candidate in candidates {
        if !is_valid_key(&candidate.cache_key) || !is_valid_crate_name(&candidate.crate_name) {
            bail!(
                "candidate {:?}/{:?} has a malformed key or crate name",
                candidate.crate_name,
                candidate.cache_key
            );
        }
        if seen.insert(candidate.cache_key.clone()) && out.len() < MAX_PLAN_CANDIDATES {
            out.push(candidate);
        }
    }
    Ok(out)
}

/// The intent for the workspace of `lockfile`: crate names dependencies
/// first and the graph between them (both from `Cargo.lock`'s resolved
/// graph, read at once: asking `cargo metadata` first cost the plan a few
/// hundred milliseconds of every build's start), the namespace, every
/// `Cargo.lock` package, the build's identity when known, and the daemon's
/// own candidate limit as the budget.
pub fn intent(
    lockfile: &Path,
    namespace: Option<String>,
    identity: Option<Identity>,
) -> Result<BuildIntent> {
    let lock = crate::lockfile::resolved(lockfile)?;
    Ok(BuildIntent {
        crate_names: lock.order,
        namespace,
        cargo_lock_deps: lock.packages,
        crate_deps: lock.deps,
        identity,
        budget: Some(Budget {
            max_candidates: Some(MAX_PLAN_CANDIDATES),
            max_bytes: None,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_goes_beside_the_plan_route() {
        assert_eq!(
            feedback_url("http://p:8080/"),
            "http://p:8080/v2/plan-feedback"
        );
        assert_eq!(
            feedback_url("http://p/x/v1/prefetch-plan"),
            "http://p/x/v2/plan-feedback"
        );
    }

    #[test]
    fn the_plan_route_is_appended_unless_given() {
        assert_eq!(plan_url("http://p:8080"), "http://p:8080/v2/prefetch-plan");
        assert_eq!(plan_url("http://p:8080/"), "http://p:8080/v2/prefetch-plan");
        assert_eq!(
            plan_url("http://p/v1/prefetch-plan"),
            "http://p/v1/prefetch-plan"
        );
        assert_eq!(
            plan_url("http://p/x/v2/prefetch-plan"),
            "http://p/x/v2/prefetch-plan"
        );
    }

    #[test]
    fn a_plan_with_a_malformed_candidate_is_refused_whole() {
        let good = PlanCandidate {
            cache_key: "a".repeat(64).into(),
            crate_name: "serde".into(),
            compile_time_ms: 0,
            size_bytes: 0,
        };
        assert_eq!(
            validated(vec![good.clone(), good.clone()]).unwrap(),
            std::slice::from_ref(&good)
        );
        let bad = PlanCandidate {
            cache_key: "../../etc".into(),
            crate_name: "serde".into(),
            compile_time_ms: 0,
            size_bytes: 0,
        };
        assert!(validated(vec![good, bad]).is_err());
    }
}
