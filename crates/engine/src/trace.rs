//! Trace context: one trace per workflow (its id is the workflow's UUID), one span per task
//! (derived from the task's id), a span per transition under it. The same context is handed to
//! agents as a W3C `traceparent`, so their spans join the workflow's trace, and an agent's own
//! `traceparent` sent back with a report links its span to the transition.

use baton_core::{TaskId, WorkflowId};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;

/// The workflow's trace id: its UUID.
pub fn trace_id(workflow: WorkflowId) -> TraceId {
    TraceId::from_bytes(*workflow.0.as_bytes())
}

/// The task's span id: the low 64 bits of its UUID (made non-zero).
pub fn task_span_id(task: TaskId) -> SpanId {
    SpanId::from_bytes((task.0.as_u64_pair().1 | 1).to_be_bytes())
}

/// The W3C `traceparent` an agent receives with a claimed task.
pub fn traceparent(workflow: WorkflowId, task: TaskId) -> String {
    format!("00-{}-{}-01", trace_id(workflow), task_span_id(task))
}

/// The context transition spans of a task are children of.
pub fn task_context(workflow: WorkflowId, task: TaskId) -> Context {
    Context::new().with_remote_span_context(SpanContext::new(
        trace_id(workflow),
        task_span_id(task),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    ))
}

/// Parses a W3C `traceparent` (`00-<trace>-<span>-<flags>`); `None` if malformed.
pub fn parse_traceparent(value: &str) -> Option<SpanContext> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version != "00" || parts.next().is_some() || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = TraceId::from_hex(trace).ok()?;
    let span = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace == TraceId::INVALID || span == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_traceparent_round_trips_and_garbage_is_refused() {
        let wf = WorkflowId(Uuid::from_u128(0x1234));
        let task = TaskId(Uuid::from_u128(0xabcd_0000));
        let tp = traceparent(wf, task);
        let ctx = parse_traceparent(&tp).unwrap();
        assert_eq!(ctx.trace_id(), trace_id(wf));
        assert_eq!(ctx.span_id(), task_span_id(task));
        assert!(ctx.is_sampled());
        for bad in [
            "",
            "00-abc-def-01",
            "01-00000000000000000000000000001234-0000000000000001-01",
            &format!("{tp}-x"),
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
    }
}
