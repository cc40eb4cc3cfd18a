//! The bench's scenarios, one function each, run in order by `run_all` in benches/load.rs: each
//! measures every target it applies to and adds its rows (or notes, or failed checks) to the
//! report. What they share: rounds with a rotated target order, and how a target's failure is
//! judged (direct's and llm-keyproxy's fail the bench, a peer's is a note).

pub mod limiting;
pub mod memory;
pub mod only;
pub mod shared;
pub mod signing;
pub mod small;
pub mod sse;
pub mod tracing;
pub mod upload;

use std::collections::{HashMap, HashSet};

use crate::support::*;

/// The small-request path every proxy forwards (the mock answers `{"status":200}`).
pub const STATUS_PATH: &str = "/mock/status/200";

/// Per-target figures gathered over rounds; the median is reported.
#[derive(Default)]
pub struct Rounds(HashMap<(String, &'static str), Vec<f64>>);

impl Rounds {
    pub fn push(&mut self, target: &str, what: &'static str, v: f64) {
        self.0.entry((target.to_owned(), what)).or_default().push(v);
    }

    pub fn median(&self, target: &str, what: &'static str) -> Option<f64> {
        self.0
            .get(&(target.to_owned(), what))
            .map(|v| median(v.clone()))
    }

    /// Forgets these targets' figures: they are reported as n/a.
    pub fn drop_targets(&mut self, targets: &HashSet<String>) {
        for v in self
            .0
            .iter_mut()
            .filter(|((t, _), _)| targets.contains(t))
            .map(|(_, v)| v)
        {
            v.fill(f64::NAN);
        }
    }
}

/// The targets in round `round`'s order (rotated, so no target always runs first).
pub fn rotated(env: &Env, round: usize) -> Vec<&Target> {
    let mut v: Vec<&Target> = env.targets.iter().collect();
    let n = v.len();
    v.rotate_left(round % n);
    v
}

/// Two targets in round `round`'s order (alternating which runs first).
pub fn rotated_pair<'a>(a: &'a Target, b: &'a Target, round: usize) -> [&'a Target; 2] {
    match round % 2 {
        0 => [a, b],
        _ => [b, a],
    }
}

/// One target's outcome in one scenario. Direct's and llm-keyproxy's failures fail the bench; a
/// peer's is a note (a peer that is slow, stuck or over its own limits is its result, not a bench
/// failure), and the caller leaves that peer's figures for the scenario out. Returns whether to
/// keep the target's figures.
pub fn judge(r: &mut Report, t: &Target, ok: bool, what: String) -> bool {
    if ok {
        return true;
    }
    if t.kind == Kind::Peer {
        r.note(format!(
            "{what}: a peer, so a note, not a failed check; its figures for this scenario are left out (n/a)"
        ));
        false
    } else {
        r.check(false, what);
        true
    }
}

/// Requests failed (errors, timeouts, non-2xx) per target over a scenario's rounds; the peers
/// whose figures are left out.
pub fn count_errors(
    r: &mut Report,
    env: &Env,
    scenario: &str,
    errors: &HashMap<String, u64>,
) -> HashSet<String> {
    let mut dropped = HashSet::new();
    for t in &env.targets {
        let n = errors.get(&t.name).copied().unwrap_or(0);
        let what = format!("{}: {scenario}: {n} requests failed or timed out", t.name);
        if !judge(r, t, n == 0, what) {
            dropped.insert(t.name.clone());
        }
    }
    dropped
}
