//! The lifecycle drawn from the same table `apply` reads: Mermaid and Graphviz DOT.

use std::fmt::Write;

use crate::lifecycle::{terminality, Lifecycle, Rule, Terminality};
use crate::task::StateKind;

/// Output format of [`Lifecycle::diagram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagramFormat {
    Mermaid,
    Dot,
}

fn label(rule: &Rule) -> String {
    let mut label = rule.event.as_str().to_owned();
    if !rule.guards.is_empty() {
        let guards: Vec<String> = rule.guards.iter().map(|g| g.to_string()).collect();
        let _ = write!(label, " [{}]", guards.join(", "));
    }
    label
}

impl Lifecycle {
    pub fn diagram(&self, format: DiagramFormat) -> String {
        match format {
            DiagramFormat::Mermaid => self.mermaid(),
            DiagramFormat::Dot => self.dot(),
        }
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("stateDiagram-v2\n");
        for rule in self.rules {
            let from = rule.from.map_or("[*]", StateKind::name);
            // Mermaid treats ':' and ';' in labels as syntax.
            let label = label(rule).replace([':', ';'], " ");
            let _ = writeln!(out, "    {from} --> {}: {label}", rule.to.name());
        }
        for state in StateKind::ALL {
            if terminality(state) != Terminality::Never {
                let _ = writeln!(out, "    {} --> [*]", state.name());
            }
        }
        out
    }

    fn dot(&self) -> String {
        let mut out = String::from(
            "digraph lifecycle {\n    rankdir=LR;\n    node [shape=box, style=rounded];\n    \
             new [shape=point, label=\"\"];\n",
        );
        for state in StateKind::ALL {
            let shape = match terminality(state) {
                Terminality::Never => "box",
                _ => "doubleoctagon",
            };
            let _ = writeln!(out, "    {} [shape={shape}];", state.name());
        }
        for rule in self.rules {
            let from = rule.from.map_or("new", StateKind::name);
            let style = if rule.reopens { ", style=dashed" } else { "" };
            let _ = writeln!(
                out,
                "    {from} -> {} [label=\"{}\"{style}];",
                rule.to.name(),
                label(rule).replace('"', "\\\"")
            );
        }
        out.push_str("}\n");
        out
    }
}
