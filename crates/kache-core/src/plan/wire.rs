//! The planner's HTTP wire types: the intent a client sends and the plan it
//! gets back (DESIGN.md, "Planner HTTP API"), and the plan's JSON writer.

use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::manifest::Identity;

/// `POST /v{1,2}/prefetch-plan` body. Every field is optional; unknown fields
/// are ignored so newer clients keep working.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BuildIntent {
    /// Crates in the order the build will need them (dependencies first).
    #[serde(default)]
    pub crate_names: Vec<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// `[name, version]` pairs from `Cargo.lock`.
    #[serde(default)]
    pub cargo_lock_deps: Vec<(String, String)>,
    /// Crate → the crates it uses directly (normalised names), from the
    /// resolved graph. An addition to the contract: with it, a changed
    /// dependency also rules out its dependents' old artifacts.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub crate_deps: BTreeMap<String, Vec<String>>,
    /// The build's identity; artifacts of another are never offered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

/// Limits a client states for one plan; either may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Budget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_candidates: Option<usize>,
    /// Bytes of the candidates' files (unpacked), as far as they are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<u64>,
}

/// What the client should do with a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Fetch the candidates, in order.
    Execute,
    /// The planner cannot help: prefetch by `Cargo.lock` as if it were absent.
    UseFallback,
    /// Fetch nothing.
    DoNothing,
}

/// The plan returned to the client. Only `disposition` is required.
///
/// Generic over the candidates' strings: clients read owned ones, the
/// service writes ones borrowed from its state (a plan copies no strings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrefetchPlan<S = Arc<str>> {
    #[serde(default)]
    pub plan_id: String,
    #[serde(default)]
    pub planner: String,
    pub disposition: Disposition,
    #[serde(default)]
    pub candidates: Vec<PlanCandidate<S>>,
    /// Why the plan falls back (`no_state`, `no_candidates`,
    /// `planning_error`); absent on `execute`. An addition to the contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// One artifact worth fetching.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub struct PlanCandidate<S = Arc<str>> {
    pub cache_key: S,
    pub crate_name: S,
    /// What compiling it cost, when known (0: unknown). Additive fields.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compile_time_ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl<S: AsRef<str>> PrefetchPlan<S> {
    /// Appends the plan as JSON to `out`: byte for byte what `serde_json`
    /// writes for it, only faster. A plan is mostly cache keys and crate
    /// names, which need no escaping: they are copied as they are.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"plan_id\":");
        write_str(out, &self.plan_id);
        out.extend_from_slice(b",\"planner\":");
        write_str(out, &self.planner);
        out.extend_from_slice(b",\"disposition\":");
        serde_json::to_writer(&mut *out, &self.disposition).expect("a Vec takes any write");
        out.extend_from_slice(b",\"candidates\":[");
        for (i, candidate) in self.candidates.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(b"{\"cache_key\":");
            write_str(out, candidate.cache_key.as_ref());
            out.extend_from_slice(b",\"crate_name\":");
            write_str(out, candidate.crate_name.as_ref());
            write_number(out, b",\"compile_time_ms\":", candidate.compile_time_ms);
            write_number(out, b",\"size_bytes\":", candidate.size_bytes);
            out.push(b'}');
        }
        out.push(b']');
        if let Some(reason) = &self.reason {
            out.extend_from_slice(b",\"reason\":");
            write_str(out, reason);
        }
        out.push(b'}');
    }
}

/// A JSON string. Only control characters, `"` and `\` need escaping (as
/// in `serde_json`, which writes everything else, non-ASCII too, as is);
/// the check has no branch per byte, so it runs over a key in a few steps.
fn write_str(out: &mut Vec<u8>, text: &str) {
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, text).expect("a Vec takes any write");
    }
}

/// `field` and `n`, unless `n` is 0 (unknown; the field is left out).
fn write_number(out: &mut Vec<u8>, field: &[u8], n: u64) {
    if !is_zero(&n) {
        out.extend_from_slice(field);
        out.extend_from_slice(n.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_and_plan_follow_the_wire_contract() {
        let intent: BuildIntent = serde_json::from_str("{}").unwrap();
        assert_eq!(intent, BuildIntent::default());
        let intent: BuildIntent = serde_json::from_str(
            r#"{"crate_names":["serde"],"namespace":null,"cargo_lock_deps":[["serde","1.0.210"]],"budget_bytes":5}"#,
        )
        .unwrap();
        assert_eq!(
            intent.cargo_lock_deps,
            [("serde".to_string(), "1.0.210".to_string())]
        );
        let plan: PrefetchPlan = serde_json::from_str(r#"{"disposition":"use_fallback"}"#).unwrap();
        assert_eq!(plan.disposition, Disposition::UseFallback);
        assert!(plan.candidates.is_empty());
        assert!(
            serde_json::from_str::<PrefetchPlan>(r#"{"plan_id":"x"}"#).is_err(),
            "disposition is required"
        );
        let json = serde_json::to_value(PrefetchPlan::<Arc<str>> {
            plan_id: "p".into(),
            planner: "planner".into(),
            disposition: Disposition::DoNothing,
            candidates: vec![],
            reason: None,
        })
        .unwrap();
        assert_eq!(json["disposition"], "do_nothing");
    }

    #[test]
    fn the_fast_writer_writes_what_serde_json_writes() {
        let candidate = |key: &str, name: &str, ms, bytes| PlanCandidate::<Arc<str>> {
            cache_key: key.into(),
            crate_name: name.into(),
            compile_time_ms: ms,
            size_bytes: bytes,
        };
        let plans = [
            PrefetchPlan {
                plan_id: "0b9c".into(),
                planner: "kache-service".into(),
                disposition: Disposition::Execute,
                candidates: vec![
                    candidate(&"ab".repeat(32), "serde_derive", 1234, 56789),
                    candidate("k\"q\\\n\u{1}\u{7f}", "naïve-crate", 0, 7),
                    candidate("", "", 3, 0),
                ],
                reason: None,
            },
            PrefetchPlan {
                plan_id: String::new(),
                planner: "tab\there".into(),
                disposition: Disposition::UseFallback,
                candidates: vec![],
                reason: Some("no_state".into()),
            },
        ];
        for plan in plans {
            let mut fast = Vec::new();
            plan.write_json(&mut fast);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                serde_json::to_string(&plan).unwrap()
            );
        }
    }
}
