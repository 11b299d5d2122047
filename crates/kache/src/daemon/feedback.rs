//! Per-plan feedback: after a build, the daemon tells the planner what
//! became of each candidate of its plan (`POST /v2/plan-feedback`).
//!
//! - `used`: the prefetch imported it and a compile then hit it (its
//!   `prefetch` origin was taken by the hit);
//! - `unused`: the prefetch imported it and nothing used it (the origin is
//!   still there when the build is over);
//! - `late`: a compile needed it before the prefetch had it, and fetched it
//!   itself.
//!
//! Candidates the store already had are not reported. A plan is reported
//! when the cargo process it was made for has exited; a plan of `kache
//! prefetch` waits for the end of the next build, and every pending plan is
//! reported when the daemon stops. Reporting is best effort: a planner that
//! does not answer loses the report, never a build.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use tracing::{debug, info, warn};

use super::planner;
use super::state::{PendingPlan, State};
use crate::store::Store;

/// Remembers a plan until its build is over.
pub fn remember(state: &State, plan: PendingPlan) {
    state.plans.lock().expect("plans lock").push(plan);
}

/// A build started: plans made ahead of it (`kache prefetch`) belong to it.
pub fn attach_build(state: &State, cargo_pid: u32) {
    for plan in state.plans.lock().expect("plans lock").iter_mut() {
        plan.cargo_pid.get_or_insert(cargo_pid);
    }
}

fn running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Reports every plan whose build is over, or every plan with `all`.
pub async fn report_finished(state: &Arc<State>, all: bool) {
    let (due, fetched) = {
        let mut plans = state.plans.lock().expect("plans lock");
        let (due, keep): (Vec<PendingPlan>, Vec<PendingPlan>) = std::mem::take(&mut *plans)
            .into_iter()
            .partition(|p| all || p.cargo_pid.is_some_and(|pid| !running(pid)));
        *plans = keep;
        let mut fetched = state.fetched.lock().expect("fetched lock");
        // With no plan left to ask about them, the fetched keys are dropped.
        let fetched = if plans.is_empty() {
            std::mem::take(&mut *fetched)
        } else {
            fetched.clone()
        };
        (due, Arc::new(fetched))
    };
    for plan in due {
        let cache_dir = state.cache_dir.clone();
        let fetched = fetched.clone();
        let settings = plan.settings.clone();
        let report =
            tokio::task::spawn_blocking(move || feedback_of(&cache_dir, &plan, &fetched)).await;
        let Ok(Ok(report)) = report else {
            warn!("could not read the store to report a plan");
            continue;
        };
        match planner::send_feedback(&settings, &report).await {
            Ok(()) => info!(
                plan = report.plan_id,
                used = report.used.len(),
                unused = report.unused.len(),
                late = report.late.len(),
                "reported plan feedback"
            ),
            Err(err) => debug!("plan feedback not delivered: {err:#}"),
        }
    }
}

/// What became of one plan's candidates.
fn feedback_of(
    cache_dir: &Path,
    plan: &PendingPlan,
    fetched: &HashSet<String>,
) -> anyhow::Result<planner::Feedback> {
    let store = Store::open(cache_dir)?;
    let imported: HashSet<&String> = plan.imported.iter().collect();
    let mut report = planner::Feedback {
        plan_id: plan.plan_id.clone(),
        ..planner::Feedback::default()
    };
    for key in &plan.offered {
        if imported.contains(key) {
            match store.index.origin(key)? {
                Some(_) => report.unused.push(key.clone()),
                None => report.used.push(key.clone()),
            }
        } else if fetched.contains(key) {
            report.late.push(key.clone());
        }
    }
    debug!(
        plan = plan.plan_id,
        age_s = plan.made.elapsed().as_secs(),
        "plan feedback computed"
    );
    Ok(report)
}
