//! One trace per workflow, a span per transition under the task's span, and the agent's own
//! span linked to the transition it reported — received with the OpenTelemetry SDK's test
//! exporter.

mod common;

use baton_engine::{trace, ReportContext};
use common::*;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test]
async fn transitions_are_spans_of_the_workflows_trace_linked_to_the_agents_spans() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("baton-test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new();
    let flow = h.submit(vec![spec("a", &[]), spec("b", &["a"])]).await;
    let agent = h.agent("worker", &["work"], 1).await;
    let a = h.claim_only(agent, flow.id("a")).await;
    let a = h.start(&a).await;
    let agent_span = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    h.engine
        .report(
            a.id,
            succeeded(&a),
            ReportContext {
                reporter: None,
                traceparent: Some(agent_span),
            },
        )
        .await
        .unwrap();
    h.tick().await;
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let transitions: Vec<_> = spans
        .iter()
        .filter(|s| s.attributes.iter().any(|kv| kv.key.as_str() == "event"))
        .collect();
    // a: submitted, assigned, started, succeeded; b: submitted, dependencies_met.
    assert_eq!(
        transitions.len(),
        6,
        "{:#?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let trace_id = trace::trace_id(flow.id);
    assert!(transitions
        .iter()
        .all(|s| s.span_context.trace_id() == trace_id));
    for s in &transitions {
        let task = s
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "task")
            .map(|kv| kv.value.to_string())
            .unwrap();
        let id = if task == flow.id("a").to_string() {
            flow.id("a")
        } else {
            flow.id("b")
        };
        assert_eq!(s.parent_span_id, trace::task_span_id(id), "{}", s.name);
    }
    let done = transitions
        .iter()
        .find(|s| s.name.starts_with("execution_succeeded"))
        .unwrap();
    assert_eq!(done.name, "execution_succeeded executing->completed");
    let linked: Vec<String> = done
        .links
        .iter()
        .map(|l| l.span_context.span_id().to_string())
        .collect();
    assert_eq!(linked, ["b7ad6b7169203331"]);
    assert_eq!(
        trace::traceparent(flow.id, flow.id("a")),
        format!("00-{}-{}-01", trace_id, trace::task_span_id(flow.id("a")))
    );
}
