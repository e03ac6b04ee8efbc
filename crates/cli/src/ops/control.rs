//! `baton cancel` and `baton retry`: an operator's events.

use baton_client::wire::ReportAnswer;
use baton_client::Client;
use uuid::Uuid;

use super::render::Paint;
use super::{call, print_json};
use crate::Output;

/// `baton cancel ID [--workflow]`.
pub async fn cancel(
    client: &Client,
    id: Uuid,
    workflow: bool,
    reason: String,
    output: Output,
) -> anyhow::Result<()> {
    if workflow {
        let answer = call(client, client.cancel_workflow(id, &reason)).await?;
        return match output {
            Output::Json => print_json(&answer),
            Output::Table => {
                println!(
                    "Workflow {id}: {} task{} cancelled",
                    answer.cancelled,
                    if answer.cancelled == 1 { "" } else { "s" }
                );
                Ok(())
            }
        };
    }
    let answer = call(client, client.cancel_task(id, &reason)).await?;
    print_answer(&answer, output)
}

/// `baton retry ID`.
pub async fn retry(client: &Client, id: Uuid, output: Output) -> anyhow::Result<()> {
    let answer = call(client, client.retry_task(id)).await?;
    print_answer(&answer, output)
}

fn print_answer(answer: &ReportAnswer, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => print_json(answer),
        Output::Table => {
            println!(
                "Task {}: {} (attempt {}, version {})",
                answer.task,
                Paint::stdout().state(answer.state),
                answer.attempt,
                answer.version
            );
            Ok(())
        }
    }
}
