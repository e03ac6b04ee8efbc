//! `baton budget` and `baton usage`: what agents spend, and the budgets that stop a workflow.

use std::collections::BTreeMap;

use baton_client::wire::WorkflowView;
use baton_client::Client;
use baton_core::{Amount, Budget, BudgetPolicy, Usage};
use clap::Args;
use uuid::Uuid;

use super::ids::IdArg;
use super::{call, print_json};
use crate::Output;

#[derive(Args, Debug)]
pub struct BudgetArgs {
    /// The workflow's id, or its last hex digits.
    pub workflow: IdArg,
    /// A budget, `UNIT=LIMIT` or `UNIT=LIMIT:POLICY` (policy pause, the default, fail or
    /// cancel), e.g. `--set usd=5 --set tokens=200000:fail`. The budgets given replace all
    /// of the workflow's; without --set or --clear, shows them.
    #[arg(long = "set", value_name = "UNIT=LIMIT[:POLICY]")]
    pub set: Vec<String>,
    /// Remove every budget.
    #[arg(long, conflicts_with = "set")]
    pub clear: bool,
    /// Why (required to change them): recorded in the audit log.
    #[arg(long, value_name = "R")]
    pub reason: Option<String>,
}

/// `baton budget WF [--set UNIT=LIMIT[:POLICY]]… [--clear] --reason R`.
pub async fn budget(
    client: &Client,
    workflow: Uuid,
    args: &BudgetArgs,
    output: Output,
) -> anyhow::Result<()> {
    let view = if args.set.is_empty() && !args.clear {
        call(client, client.workflow(workflow)).await?
    } else {
        let budgets = args
            .set
            .iter()
            .map(|s| parse_budget(s))
            .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
        let Some(reason) = &args.reason else {
            anyhow::bail!("--reason: say why the budgets change (it is audited)");
        };
        call(client, client.set_budgets(workflow, reason, budgets)).await?
    };
    if output == Output::Json {
        return print_json(&view);
    }
    print_spend(&view);
    Ok(())
}

/// `baton usage [--label KEY:VALUE]`.
pub async fn usage(client: &Client, label: Option<&str>, output: Output) -> anyhow::Result<()> {
    let view = call(client, client.usage(label)).await?;
    if output == Output::Json {
        return print_json(&view);
    }
    if view.usage.is_empty() {
        println!("Nothing reported.");
    }
    for (unit, spent) in &view.usage {
        println!("{unit:<16} {spent}");
    }
    Ok(())
}

/// What the workflow spent against its budgets, one unit a line.
pub fn print_spend(w: &WorkflowView) {
    let units: std::collections::BTreeSet<&String> =
        w.usage.keys().chain(w.budgets.keys()).collect();
    if units.is_empty() {
        println!("No usage reported and no budgets.");
    }
    for unit in units {
        println!("{}", spend_line(unit, &w.usage, &w.budgets));
    }
    if let Some(p) = w
        .paused
        .as_ref()
        .filter(|p| p.by == baton_engine::BUDGET_ACTOR)
    {
        println!("paused: {}", p.reason);
    }
}

/// `usd  1.2 of 5 (pause)`.
pub fn spend_line(unit: &str, usage: &Usage, budgets: &BTreeMap<String, Budget>) -> String {
    let spent = usage.get(unit).copied().unwrap_or_default();
    match budgets.get(unit) {
        None => format!("{unit:<16} {spent}"),
        Some(b) => format!(
            "{unit:<16} {spent} of {} ({}{})",
            b.limit,
            b.policy.as_str(),
            if spent >= b.limit { ", reached" } else { "" }
        ),
    }
}

/// `usd=5`, `tokens=200000:fail`.
fn parse_budget(s: &str) -> anyhow::Result<(String, Budget)> {
    let expected = "UNIT=LIMIT or UNIT=LIMIT:POLICY (policy pause, fail or cancel)";
    let (unit, rest) = s
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--set {s:?}: expected {expected}"))?;
    let (limit, policy) = match rest.split_once(':') {
        Some((l, p)) => (l, p),
        None => (rest, "pause"),
    };
    let limit = limit
        .parse::<f64>()
        .ok()
        .and_then(Amount::of)
        .ok_or_else(|| anyhow::anyhow!("--set {s:?}: the limit must be a number above 0"))?;
    let policy = match policy {
        "pause" => BudgetPolicy::Pause,
        "fail" => BudgetPolicy::Fail,
        "cancel" => BudgetPolicy::Cancel,
        other => anyhow::bail!("--set {s:?}: unknown policy {other:?}; expected {expected}"),
    };
    Ok((unit.to_owned(), Budget { limit, policy }))
}
