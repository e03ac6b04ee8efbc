//! The demo's workflow: a quarterly technology briefing. One `plan` task is submitted; the
//! planner decomposes it into one planning task per section, and each section's planner into
//! research, writing, review and publication. The faults the demo shows are written into the
//! tasks' inputs (`simulate`), where `baton show` makes them visible.

use std::collections::BTreeSet;

use baton_core::{
    Capability, CompensationSpec, ConcurrencyKey, RetryPolicy, TaskKey, TaskSpec, Timeouts,
};
use serde_json::{json, Value};

/// Research tasks per section; each section also has a plan, a draft, a review and a
/// publication.
pub const RESEARCH_PER_SECTION: usize = 6;
/// Tasks one section's decomposition adds, its planning task included.
pub const TASKS_PER_SECTION: usize = RESEARCH_PER_SECTION + 4;
/// Fewest sections: the faults need three.
pub const SECTIONS_MIN: usize = 3;
/// Most sections (the `--tasks` bound follows from it).
pub const SECTIONS_MAX: usize = 500;
/// Heartbeat deadline of research tasks: short, so that the stalled one times out quickly.
pub const RESEARCH_HEARTBEAT_MS: u64 = 1_000;
/// Longest the stalled researcher stays silent waiting for the watchdog to take its task back.
pub const STALL_MAX_MS: u64 = 10 * RESEARCH_HEARTBEAT_MS;
/// First backoff before a retry; doubles up to [`BACKOFF_MAX_MS`].
pub const BACKOFF_MS: u64 = 100;
pub const BACKOFF_MAX_MS: u64 = 1_000;
/// Attempts a research task gets.
pub const RESEARCH_ATTEMPTS: u32 = 4;
/// The concurrency key every research task holds: a search API that takes this many calls at
/// once, fewer than the researchers' slots.
pub const SEARCH_KEY: &str = "search-api";
pub const SEARCH_MAX: u32 = 8;
/// The error kind of the research task that fails for good.
pub const FORBIDDEN_KIND: &str = "source_forbidden";
/// The error kind of transient research failures.
pub const TRANSIENT_KIND: &str = "rate_limited";
/// The task that outlines the briefing, and the fan-out over its topics.
pub const OUTLINE_KEY: &str = "outline";
pub const COVER_KEY: &str = "cover";
/// What the briefing is for.
const GOAL: &str = "Quarterly technology briefing";

const TOPICS: &[&str] = &[
    "solid-state batteries",
    "grid-scale storage",
    "small modular reactors",
    "perovskite solar cells",
    "green hydrogen",
    "carbon capture",
    "quantum error correction",
    "RISC-V in the data centre",
    "chiplets and advanced packaging",
    "photonic interconnects",
    "open-weight language models",
    "AI inference at the edge",
    "post-quantum cryptography",
    "memory-safe systems languages",
    "satellite broadband",
    "6G research",
    "autonomous trucking",
    "eVTOL air taxis",
    "precision fermentation",
    "CRISPR therapeutics",
    "mRNA beyond vaccines",
    "brain-computer interfaces",
    "humanoid robots",
    "digital twins in manufacturing",
    "sodium-ion batteries",
    "geothermal drilling",
    "fusion start-ups",
    "vertical farming",
    "lab-grown diamonds",
    "neuromorphic chips",
];

const QUESTIONS: &[&str] = &[
    "market size and growth",
    "key players",
    "recent breakthroughs",
    "regulation",
    "open problems",
    "five-year outlook",
];

/// A fault the demo injects into one research task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Fails with a retryable error on its first `n` attempts.
    Flaky(u32),
    /// Goes silent on its first attempt past the heartbeat deadline, then reports too late.
    Stall,
    /// Fails for good: its compensation runs and its section is cancelled.
    Forbidden,
}

impl Fault {
    fn code(self) -> String {
        match self {
            Fault::Flaky(n) => format!("flaky-{n}"),
            Fault::Stall => "stall".into(),
            Fault::Forbidden => "forbidden".into(),
        }
    }

    /// The fault named in a task's input.
    pub fn of(input: &Value) -> Option<Fault> {
        match input.get("simulate")?.as_str()? {
            "stall" => Some(Fault::Stall),
            "forbidden" => Some(Fault::Forbidden),
            other => other.strip_prefix("flaky-")?.parse().ok().map(Fault::Flaky),
        }
    }
}

/// The workflow of one demo run and the outcomes it must show.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub sections: usize,
}

impl Scenario {
    /// The scenario whose workflow grows to about `tasks` tasks.
    pub fn for_tasks(tasks: usize) -> Scenario {
        let sections = (tasks.saturating_sub(2) + TASKS_PER_SECTION / 2) / TASKS_PER_SECTION;
        Scenario {
            sections: sections.clamp(SECTIONS_MIN, SECTIONS_MAX),
        }
    }

    /// Tasks once every planner has decomposed its part, the compensation task included.
    pub fn expected_total(&self) -> usize {
        // The plan and what its planners add, the compensation, the outline, the cover and
        // its line per section.
        1 + self.sections * TASKS_PER_SECTION + 1 + 2 + self.sections
    }

    /// The briefing's outline: its goal and one topic per section, read by the cover.
    pub fn outline(&self) -> TaskSpec {
        let mut spec = task(OUTLINE_KEY, "planner", 100);
        spec.input = json!({
            "kind": "outline",
            "goal": GOAL,
            "topics": (0..self.sections).map(topic).collect::<Vec<_>>(),
        });
        spec
    }

    /// The cover: a fan-out, one line per section of the outline, each written by a writer
    /// from the outline's goal and its topic (`item`).
    pub fn cover(&self) -> TaskSpec {
        let mut spec = task(COVER_KEY, "writer", 20);
        spec.depends_on = vec![TaskKey(OUTLINE_KEY.into())];
        spec.for_each = Some(json!({"$from": OUTLINE_KEY, "pointer": "/topics"}));
        spec.input = json!({
            "kind": "cover_line",
            "goal": {"$from": OUTLINE_KEY, "pointer": "/goal"},
        });
        spec
    }

    /// The workflow's result: the goal and the cover's lines, in section order.
    pub fn outputs(&self) -> std::collections::BTreeMap<String, Value> {
        std::collections::BTreeMap::from([
            (
                "goal".to_owned(),
                json!({"$from": OUTLINE_KEY, "pointer": "/goal"}),
            ),
            ("cover".to_owned(), json!({"$from": COVER_KEY})),
        ])
    }

    /// The fault of research task `r` of section `s`, if any: the stall early (so that its
    /// recovery overlaps the rest), the failure in the third section, and a few transient
    /// failures spread over the others.
    pub fn fault(&self, s: usize, r: usize) -> Option<Fault> {
        match (s, r) {
            (0, 0) => Some(Fault::Stall),
            (2, 3) => Some(Fault::Forbidden),
            _ => {
                let n = s * RESEARCH_PER_SECTION + r;
                if n % 23 == 5 {
                    Some(Fault::Flaky(2))
                } else if n % 7 == 3 {
                    Some(Fault::Flaky(1))
                } else {
                    None
                }
            }
        }
    }

    pub fn stalled_key(&self) -> String {
        research_key(0, 0)
    }

    pub fn forbidden_key(&self) -> String {
        research_key(2, 3)
    }

    pub fn compensation_key(&self) -> String {
        undo_key(&self.forbidden_key())
    }

    /// The tasks cancelled because the forbidden research failed: its section's draft, review
    /// and publication.
    pub fn cancelled_keys(&self) -> Vec<String> {
        ["write", "review", "publish"]
            .iter()
            .map(|step| format!("{}/{step}", section_prefix(2)))
            .collect()
    }

    /// Research tasks that must complete after failing transiently, with their failing
    /// attempts.
    pub fn flaky(&self) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for s in 0..self.sections {
            for r in 0..RESEARCH_PER_SECTION {
                if let Some(Fault::Flaky(n)) = self.fault(s, r) {
                    out.push((research_key(s, r), n));
                }
            }
        }
        out
    }

    /// The one task submitted: the briefing's plan, whose input lists the sections.
    pub fn root(&self) -> TaskSpec {
        let sections: Vec<Value> = (0..self.sections)
            .map(|s| {
                let faults: serde_json::Map<String, Value> = (0..RESEARCH_PER_SECTION)
                    .filter_map(|r| Some((r.to_string(), Value::from(self.fault(s, r)?.code()))))
                    .collect();
                json!({
                    "section": s,
                    "topic": topic(s),
                    "questions": QUESTIONS,
                    "simulate": faults,
                })
            })
            .collect();
        let mut spec = task("plan", "planner", 100);
        spec.input = json!({
            "kind": "plan",
            "goal": GOAL,
            "sections": sections,
        });
        spec
    }
}

/// The planner's decomposition of `plan`: one planning task per section.
pub fn section_plans(root_input: &Value) -> Vec<TaskSpec> {
    let sections = root_input["sections"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    sections
        .into_iter()
        .map(|section| {
            let s = section["section"].as_u64().unwrap_or(0) as usize;
            let mut spec = task(&format!("{}/plan", section_prefix(s)), "planner", 50);
            let mut input = section;
            input["kind"] = "plan_section".into();
            spec.input = input;
            spec
        })
        .collect()
}

/// A section planner's decomposition: research, then a draft fed by it, a review gating the
/// publication.
pub fn section_tasks(section_input: &Value) -> Vec<TaskSpec> {
    let s = section_input["section"].as_u64().unwrap_or(0) as usize;
    let topic = section_input["topic"]
        .as_str()
        .unwrap_or("a topic")
        .to_owned();
    let prefix = section_prefix(s);
    let mut specs = Vec::with_capacity(TASKS_PER_SECTION - 1);
    let mut research = Vec::with_capacity(RESEARCH_PER_SECTION);
    for r in 0..RESEARCH_PER_SECTION {
        let key = research_key(s, r);
        let mut spec = task(&key, "researcher", 10);
        let question = section_input["questions"][r]
            .as_str()
            .unwrap_or("background");
        spec.input = json!({"kind": "research", "topic": topic, "question": question});
        if let Some(fault) = section_input["simulate"].get(r.to_string()) {
            spec.input["simulate"] = fault.clone();
        }
        spec.retry = RetryPolicy {
            max_attempts: RESEARCH_ATTEMPTS,
            non_retryable: vec![FORBIDDEN_KIND.into()],
            ..quick_retries()
        };
        spec.timeouts.heartbeat_ms = Some(RESEARCH_HEARTBEAT_MS);
        spec.concurrency = vec![ConcurrencyKey {
            key: SEARCH_KEY.into(),
            max: SEARCH_MAX,
        }];
        spec.compensation = Some(CompensationSpec {
            retry: None,
            timeouts: None,
            priority: None,
            key: TaskKey(undo_key(&key)),
            capabilities: caps("researcher"),
            input: json!({"kind": "undo_research", "release": format!("source quota for {topic}")}),
        });
        research.push(TaskKey(key));
        specs.push(spec);
    }
    let mut write = task(&format!("{prefix}/write"), "writer", 5);
    write.depends_on = research;
    write.input = json!({"kind": "write", "topic": topic, "words": 600});
    let mut review = task(&format!("{prefix}/review"), "reviewer", 5);
    review.depends_on = vec![write.key.clone()];
    review.input = json!({"kind": "review", "topic": topic});
    let mut publish = task(&format!("{prefix}/publish"), "publisher", 5);
    publish.depends_on = vec![review.key.clone()];
    publish.input = json!({"kind": "publish", "topic": topic, "channel": "briefing"});
    specs.extend([write, review, publish]);
    specs
}

fn task(key: &str, capability: &str, priority: i32) -> TaskSpec {
    let mut spec = TaskSpec::new(key);
    spec.capabilities = caps(capability);
    spec.priority = priority;
    spec.retry = quick_retries();
    spec.timeouts = Timeouts {
        schedule_to_start_ms: None,
        start_ms: Some(10_000),
        start_to_close_ms: Some(60_000),
        heartbeat_ms: Some(10_000),
    };
    spec
}

fn quick_retries() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        initial_backoff_ms: BACKOFF_MS,
        backoff_multiplier: 2.0,
        max_backoff_ms: BACKOFF_MAX_MS,
        jitter: 0.2,
        non_retryable: Vec::new(),
    }
}

fn caps(name: &str) -> BTreeSet<Capability> {
    BTreeSet::from([Capability(name.to_owned())])
}

fn topic(s: usize) -> String {
    match s / TOPICS.len() {
        0 => TOPICS[s].to_owned(),
        round => format!("{} ({})", TOPICS[s % TOPICS.len()], round + 1),
    }
}

fn section_prefix(s: usize) -> String {
    format!("s{s:02}")
}

fn research_key(s: usize, r: usize) -> String {
    format!("{}/research-{r}", section_prefix(s))
}

fn undo_key(key: &str) -> String {
    format!("{key}/undo")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decomposition_adds_up_to_the_expected_total() {
        for tasks in [0, 60, 250, 1000] {
            let sc = Scenario::for_tasks(tasks);
            let root = sc.root();
            let plans = section_plans(&root.input);
            let added: usize = plans
                .iter()
                .map(|p| 1 + section_tasks(&p.input).len())
                .sum();
            assert_eq!(1 + added + 1 + 2 + sc.sections, sc.expected_total());
            for spec in plans.iter().chain([&root, &sc.outline(), &sc.cover()]) {
                spec.validate().unwrap();
            }
        }
        assert_eq!(Scenario::for_tasks(250).expected_total(), 279);
    }

    #[test]
    fn faults_reach_the_research_inputs() {
        let sc = Scenario::for_tasks(250);
        let plans = section_plans(&sc.root().input);
        let all: Vec<TaskSpec> = plans.iter().flat_map(|p| section_tasks(&p.input)).collect();
        let fault = |key: &str| {
            let spec = all.iter().find(|t| t.key.0 == key).unwrap();
            spec.validate().unwrap();
            Fault::of(&spec.input)
        };
        assert_eq!(fault(&sc.stalled_key()), Some(Fault::Stall));
        assert_eq!(fault(&sc.forbidden_key()), Some(Fault::Forbidden));
        let flaky = sc.flaky();
        assert!(flaky.len() >= 5, "{flaky:?}");
        for (key, n) in flaky {
            assert_eq!(fault(&key), Some(Fault::Flaky(n)));
        }
        for key in sc.cancelled_keys() {
            assert!(all.iter().any(|t| t.key.0 == key), "{key}");
        }
    }
}
