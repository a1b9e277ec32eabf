//! Putting a compiled table into the kernel, and reading ours back.
//!
//! One nft transaction adds, deletes and recreates `inet palisade`: the `add` makes the `delete`
//! valid on a host without the table, the `delete` drops every old set element (a `flush table`
//! would keep them), and since it is one transaction the host is never without the table, and a
//! failed transaction leaves the previous one in force. Only our table is ever listed or changed.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use nftables::schema::{NfCmd, NfListObject, NfObject, Nftables, Table};
use nftables::types::NfFamily;
use serde_json::Value;

use palisade_policy::compile::{Ruleset, TABLE};

use crate::parts::GENERATION_COMMENT;
use crate::text::element_text;

/// Why a table was not written or not read; nft's own words inside.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// nft ran and refused the transaction: nothing changed.
    #[error("nft refused the transaction, the previous table stays in force: {0}")]
    Refused(String),
    /// nft could not be run at all (not installed, no permission).
    #[error("cannot run nft: {0}")]
    Nft(String),
    /// Listing our table failed, or its JSON did not parse.
    #[error("cannot read the live table: {0}")]
    Read(String),
}

/// The whole transaction: add + delete + recreate.
pub fn transaction(ruleset: &Ruleset) -> Nftables<'static> {
    let table = || {
        NfListObject::Table(Table {
            family: NfFamily::INet,
            name: TABLE.into(),
            handle: None,
        })
    };
    let mut objects = vec![
        NfObject::CmdObject(NfCmd::Add(table())),
        NfObject::CmdObject(NfCmd::Delete(table())),
    ];
    objects.extend(crate::json::nft_json(ruleset).objects.iter().cloned());
    Nftables {
        objects: Cow::Owned(objects),
    }
}

/// Applies the ruleset in one transaction.
pub fn apply(ruleset: &Ruleset) -> Result<(), ApplyError> {
    let payload =
        serde_json::to_string(&transaction(ruleset)).map_err(|e| ApplyError::Nft(e.to_string()))?;
    run_json(&payload)
}

/// Runs one nft JSON transaction (`nft -j -f -`): all of it, or nothing.
pub fn run_json(payload: &str) -> Result<(), ApplyError> {
    nftables::helper::apply_ruleset_raw(payload, None::<&str>, std::iter::empty::<&str>())
        .map(|_| ())
        .map_err(|e| match e {
            nftables::helper::NftablesError::NftFailed { stdout, stderr, .. } => {
                ApplyError::Refused(what_nft_said(&stdout, &stderr))
            }
            other => ApplyError::Nft(other.to_string()),
        })
}

/// What nft said when it refused: its stderr, else its stdout (nft -j may answer there), else
/// that it said nothing, so that a refusal never ends in an empty sentence.
fn what_nft_said(stdout: &str, stderr: &str) -> String {
    [stderr.trim(), stdout.trim()]
        .into_iter()
        .find(|s| !s.is_empty())
        .map_or_else(
            || "nft exited with a failure and said nothing (was it killed, or refused a system call?)".to_owned(),
            str::to_owned,
        )
}

/// Our live table as nft's JSON, or None when there is none.
pub fn live_table() -> Result<Option<Value>, ApplyError> {
    live_inet_table(TABLE)
}

/// The live `inet <name>` table as nft's JSON, or None when there is none.
pub fn live_inet_table(name: &str) -> Result<Option<Value>, ApplyError> {
    match nftables::helper::get_current_ruleset_raw(
        None::<&str>,
        ["list", "table", "inet", name].iter(),
    ) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ApplyError::Read(e.to_string())),
        Err(nftables::helper::NftablesError::NftFailed { stderr, .. })
            if stderr.contains("No such file or directory") =>
        {
            Ok(None)
        }
        Err(e) => Err(ApplyError::Read(e.to_string())),
    }
}

pub use palisade_policy::compile::BASELINE_MARK;

/// Whether a live `inet palisade` table is one we wrote: it carries a generation or the
/// baseline's mark. A table someone else made under our name (even an empty one) is not.
pub fn is_ours(live: &Value) -> bool {
    live_generation(live).is_some() || rule_comments(live).any(|c| c == BASELINE_MARK)
}

/// The comments of a live table's rules (ours or the redirect table): where each carries its mark.
pub(crate) fn rule_comments(live: &Value) -> impl Iterator<Item = &str> {
    objects(live)
        .filter_map(|o| o.get("rule"))
        .filter_map(|r| r.get("comment")?.as_str())
}

/// The generation stamped into a live table, if it carries one.
pub fn live_generation(live: &Value) -> Option<String> {
    rule_comments(live).find_map(|c| c.strip_prefix(GENERATION_COMMENT).map(str::to_owned))
}

fn objects(live: &Value) -> impl Iterator<Item = &Value> {
    live.get("nftables")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// What applying `ruleset` would change in `live` (None: no table yet), one line per difference,
/// empty when they are equal.
pub fn diff(live: Option<&Value>, ruleset: &Ruleset) -> Vec<String> {
    let Some(live) = live else {
        return vec![format!(
            "+ table inet {TABLE} (not present: the whole table is new)"
        )];
    };
    let mut out = Vec::new();
    let live_gen = live_generation(live);
    if live_gen.as_deref() != Some(ruleset.generation.as_str()) {
        out.push(format!(
            "~ generation {} -> {}",
            live_gen.as_deref().unwrap_or("(none)"),
            ruleset.generation
        ));
    }
    let live_sets: Vec<(&str, BTreeSet<String>)> = objects(live)
        .filter_map(|o| o.get("set"))
        .filter_map(|s| {
            let name = s.get("name")?.as_str()?;
            let elements = s
                .get("elem")
                .and_then(Value::as_array)
                .map(|e| e.iter().map(element_string).collect())
                .unwrap_or_default();
            Some((name, elements))
        })
        .collect();
    for set in &ruleset.sets {
        let wanted: BTreeSet<String> = set
            .elements
            .iter()
            .map(|e| element_text(set.family, set.key, e))
            .collect();
        match live_sets.iter().find(|(n, _)| *n == set.name) {
            None => out.push(format!("+ set {} ({} elements)", set.name, wanted.len())),
            Some((_, have)) => {
                for e in wanted.difference(have) {
                    out.push(format!("+ {}: {e}", set.name));
                }
                for e in have.difference(&wanted) {
                    out.push(format!("- {}: {e}", set.name));
                }
            }
        }
    }
    for (name, _) in &live_sets {
        if !ruleset.sets.iter().any(|s| s.name == *name) {
            out.push(format!("- set {name}"));
        }
    }
    // Chains and rules are compared whole: a count would miss a rule replaced by another (a
    // default drop turned into an accept) or a base chain's policy turned to drop.
    let wanted = serde_json::to_value(crate::json::nft_json(ruleset)).unwrap_or_default();
    let wanted_objects = || {
        wanted
            .get("nftables")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|o| o.get("add"))
    };
    let chains = |objects: &mut dyn Iterator<Item = &Value>| -> BTreeMap<String, Value> {
        objects
            .filter_map(|o| o.get("chain"))
            .filter_map(|c| Some((c.get("name")?.as_str()?.to_owned(), canonical(c))))
            .collect()
    };
    let rules = |objects: &mut dyn Iterator<Item = &Value>| -> BTreeMap<String, Vec<Value>> {
        let mut by_chain: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for r in objects.filter_map(|o| o.get("rule")) {
            let chain = r.get("chain").and_then(Value::as_str).unwrap_or_default();
            by_chain
                .entry(chain.to_owned())
                .or_default()
                .push(canonical(r));
        }
        by_chain
    };
    let (live_chains, wanted_chains) = (chains(&mut objects(live)), chains(&mut wanted_objects()));
    for (name, chain) in &wanted_chains {
        match live_chains.get(name) {
            None => out.push(format!("+ chain {name}")),
            Some(have) if have != chain => out.push(format!("~ chain {name}: {have} -> {chain}")),
            Some(_) => {}
        }
    }
    for name in live_chains
        .keys()
        .filter(|n| !wanted_chains.contains_key(*n))
    {
        out.push(format!("- chain {name}"));
    }
    let (live_rules, wanted_rules) = (rules(&mut objects(live)), rules(&mut wanted_objects()));
    let names: BTreeSet<&String> = live_rules.keys().chain(wanted_rules.keys()).collect();
    for name in names {
        let have = live_rules.get(name).map_or(&[][..], Vec::as_slice);
        let want = wanted_rules.get(name).map_or(&[][..], Vec::as_slice);
        if have != want {
            out.push(format!(
                "~ rules of chain {name}: {} live, {} compiled, {} differ",
                have.len(),
                want.len(),
                have.iter().filter(|r| !want.contains(r)).count()
                    + want.iter().filter(|r| !have.contains(r)).count()
            ));
        }
    }
    out
}

/// A chain or rule of nft's JSON as compared: without its handle and its counters' values (state,
/// not configuration), and with lists of plain values (anonymous sets, flags) in one order, since
/// nft lists them in its own.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "handle")
                .map(|(k, v)| match k.as_str() {
                    "counter" if !v.is_string() => (k.clone(), Value::Null),
                    _ => (k.clone(), canonical(v)),
                })
                .collect(),
        ),
        Value::Array(items) => {
            let mut items: Vec<Value> = items.iter().map(canonical).collect();
            if items.iter().all(|i| !i.is_object() && !i.is_array()) {
                items.sort_by_key(|i| i.to_string());
            }
            Value::Array(items)
        }
        other => other.clone(),
    }
}

/// A set element of nft's JSON in the notation of `text::element_text`.
fn element_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) => {
            if let Some(c) = o.get("concat").and_then(Value::as_array) {
                c.iter().map(element_string).collect::<Vec<_>>().join(" . ")
            } else if let Some(p) = o.get("prefix") {
                format!(
                    "{}/{}",
                    p.get("addr").map(element_string).unwrap_or_default(),
                    p.get("len").map(element_string).unwrap_or_default()
                )
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                r.iter().map(element_string).collect::<Vec<_>>().join("-")
            } else if let Some(e) = o.get("elem") {
                element_string(e.get("val").unwrap_or(e))
            } else {
                v.to_string()
            }
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_always_says_something() {
        assert_eq!(
            what_nft_said("", "Error: No such file\n"),
            "Error: No such file"
        );
        assert_eq!(what_nft_said("{\"error\": 1}\n", "  "), "{\"error\": 1}");
        let nothing = ApplyError::Refused(what_nft_said("", "\n")).to_string();
        assert!(!nothing.trim_end().ends_with(':'), "{nothing}");
        assert!(nothing.contains("said nothing"), "{nothing}");
    }
}
