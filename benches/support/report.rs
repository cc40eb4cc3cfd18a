//! The report: one row per figure, one column per target (direct, llm-keyproxy, then the peers),
//! each with its ratio to direct, and llm-keyproxy's ratio to the best peer. Rendered as a
//! Markdown table and as JSON (for the chart script).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

pub const DIRECT: &str = "direct";
pub const KEYPROXY: &str = "llm-keyproxy";

/// Which way is better for a figure.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Better {
    Lower,
    Higher,
    /// Informational (a status code, a count).
    Neither,
}

impl Better {
    fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
            Better::Neither => "neither",
        }
    }
}

pub struct Row {
    pub id: String,
    pub label: String,
    pub better: Better,
    /// Show each target's ratio to the direct figure (absolute figures; not for "added" rows).
    pub vs_direct: bool,
    pub decimals: usize,
    pub values: BTreeMap<String, f64>,
}

/// A keyproxy-only figure, optionally against a reference (e.g. no tunnel vs tunnel).
pub struct KpRow {
    pub id: String,
    pub label: String,
    pub value: f64,
    pub reference: Option<(String, f64)>,
    pub decimals: usize,
}

pub struct Report {
    pub quick: bool,
    /// Column order: direct, llm-keyproxy, peers.
    pub targets: Vec<String>,
    pub peers: Vec<String>,
    pub rows: Vec<Row>,
    pub kp_rows: Vec<KpRow>,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
    pub meta: serde_json::Map<String, Value>,
}

fn fmt_num(v: f64, decimals: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    format!("{v:.decimals$}")
}

fn finite(v: f64) -> Value {
    if v.is_finite() {
        json!((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

impl Report {
    pub fn new(quick: bool, targets: Vec<String>, peers: Vec<String>) -> Report {
        Report {
            quick,
            targets,
            peers,
            rows: Vec::new(),
            kp_rows: Vec::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            meta: serde_json::Map::new(),
        }
    }

    /// Adds (or extends) row `id` with `target`'s value.
    #[allow(clippy::too_many_arguments)]
    pub fn set(
        &mut self,
        id: &str,
        label: &str,
        better: Better,
        vs_direct: bool,
        decimals: usize,
        target: &str,
        value: f64,
    ) {
        if let Some(row) = self.rows.iter_mut().find(|r| r.id == id) {
            row.values.insert(target.to_owned(), value);
            return;
        }
        let mut values = BTreeMap::new();
        values.insert(target.to_owned(), value);
        self.rows.push(Row {
            id: id.to_owned(),
            label: label.to_owned(),
            better,
            vs_direct,
            decimals,
            values,
        });
    }

    pub fn kp(
        &mut self,
        id: &str,
        label: &str,
        value: f64,
        reference: Option<(&str, f64)>,
        decimals: usize,
    ) {
        self.kp_rows.push(KpRow {
            id: id.to_owned(),
            label: label.to_owned(),
            value,
            reference: reference.map(|(l, v)| (l.to_owned(), v)),
            decimals,
        });
    }

    pub fn note(&mut self, s: String) {
        self.notes.push(s);
    }

    pub fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failures.push(what);
        }
    }

    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    pub fn get(&self, id: &str, target: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.id == id)
            .and_then(|r| r.values.get(target).copied())
    }

    /// llm-keyproxy's figure over the best peer's, and that peer.
    fn vs_best_peer(&self, row: &Row) -> Option<(f64, String)> {
        let kp = *row.values.get(KEYPROXY)?;
        let best = self
            .peers
            .iter()
            .filter_map(|p| Some((*row.values.get(p)?, p.clone())))
            .filter(|(v, _)| v.is_finite())
            .reduce(|a, b| match row.better {
                Better::Lower if b.0 < a.0 => b,
                Better::Higher if b.0 > a.0 => b,
                _ => a,
            })?;
        if row.better == Better::Neither || best.0 <= 0.0 || !kp.is_finite() {
            return None;
        }
        Some((kp / best.0, best.1))
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "llm-keyproxy load benchmark ({} run)\n",
            if self.quick { "quick smoke" } else { "full" }
        );
        let has_peers = !self.peers.is_empty();
        let mut head = String::from("| scenario |");
        let mut rule = String::from("|---|");
        for t in &self.targets {
            let _ = write!(head, " {t} |");
            rule.push_str("---:|");
        }
        if has_peers {
            head.push_str(" llm-keyproxy / best peer |");
            rule.push_str("---:|");
        }
        let _ = writeln!(out, "{head}\n{rule}");
        for row in &self.rows {
            let direct = row.values.get(DIRECT).copied();
            let _ = write!(out, "| {} |", row.label);
            for t in &self.targets {
                match row.values.get(t) {
                    None => out.push_str(" – |"),
                    Some(&v) => {
                        let mut cell = fmt_num(v, row.decimals);
                        if let Some(d) = direct.filter(|_| row.vs_direct && t != DIRECT) {
                            if d > 0.0 && v.is_finite() {
                                let _ = write!(cell, " ({:.2}x)", v / d);
                            }
                        }
                        let _ = write!(out, " {cell} |");
                    }
                }
            }
            if has_peers {
                match self.vs_best_peer(row) {
                    Some((r, p)) => {
                        let _ = write!(out, " {r:.2} ({p}) |");
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
        if !self.kp_rows.is_empty() {
            let _ = writeln!(
                out,
                "\n| llm-keyproxy only | value | reference | value / reference |\n|---|---:|---:|---:|"
            );
            for r in &self.kp_rows {
                let (reference, ratio) = match &r.reference {
                    Some((label, v)) => (
                        format!("{} ({label})", fmt_num(*v, r.decimals)),
                        if *v > 0.0 {
                            format!("{:.2}", r.value / v)
                        } else {
                            "–".into()
                        },
                    ),
                    None => ("–".into(), "–".into()),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {reference} | {ratio} |",
                    r.label,
                    fmt_num(r.value, r.decimals)
                );
            }
        }
        let _ = writeln!(out);
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        if self.failures.is_empty() {
            let _ = writeln!(
                out,
                "\nall checks passed: every SSE event arrived once, in order, unmerged; every request answered 2xx"
            );
        } else {
            for f in &self.failures {
                let _ = writeln!(out, "\nFAILED: {f}");
            }
        }
        out
    }

    pub fn json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let direct = row.values.get(DIRECT).copied();
                let values: serde_json::Map<String, Value> = row
                    .values
                    .iter()
                    .map(|(k, v)| (k.clone(), finite(*v)))
                    .collect();
                let vs_direct: serde_json::Map<String, Value> = row
                    .values
                    .iter()
                    .filter(|(k, _)| row.vs_direct && k.as_str() != DIRECT)
                    .filter_map(|(k, v)| {
                        let d = direct.filter(|d| *d > 0.0)?;
                        Some((k.clone(), finite(v / d)))
                    })
                    .collect();
                let best = self
                    .vs_best_peer(row)
                    .map(|(r, p)| json!({"ratio": finite(r), "peer": p}))
                    .unwrap_or(Value::Null);
                json!({
                    "id": row.id,
                    "label": row.label,
                    "better": row.better.as_str(),
                    "values": values,
                    "vs_direct": vs_direct,
                    "keyproxy_vs_best_peer": best,
                })
            })
            .collect();
        let kp: Vec<Value> = self
            .kp_rows
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "label": r.label,
                    "value": finite(r.value),
                    "reference": r.reference.as_ref().map(|(l, v)| json!({"label": l, "value": finite(*v)})),
                })
            })
            .collect();
        let mut top = self.meta.clone();
        top.insert("quick".into(), json!(self.quick));
        top.insert("targets".into(), json!(self.targets));
        top.insert("peers".into(), json!(self.peers));
        top.insert("rows".into(), Value::Array(rows));
        top.insert("keyproxy_only".into(), Value::Array(kp));
        top.insert("notes".into(), json!(self.notes));
        top.insert("failures".into(), json!(self.failures));
        Value::Object(top)
    }
}
