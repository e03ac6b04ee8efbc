#!/usr/bin/env python3
"""A Baton agent in Python, with the SDK in sdk/python (`pip install ./sdk/python`).

    BATON_URL=http://127.0.0.1:7700 python3 examples/python-agent.py

It offers two capabilities. `summarize`, for tasks such as

    baton submit - <<'EOF'
    tasks: [{key: summary, capabilities: [summarize], input: {text: "Baton tracks tasks. Agents claim them. It is durable."}}]
    EOF

and `researcher`, which the research tasks of examples/workflow.yaml require (the shell agent
can take the other steps). Ctrl-C stops claiming, lets running handlers finish, and gives back
what is still held.
"""

import baton

# The URL and token come from BATON_URL / BATON_TOKEN.
agent = baton.Agent("python-agent", concurrency=4)


@agent.task("summarize")
def summarize(input, ctx):
    text = input.get("text", "")
    if not text:
        # Fails the task at once: retrying would not give it any text.
        raise baton.NonRetryable("nothing to summarize", kind="empty_input")
    sentences = [s.strip() for s in text.split(".") if s.strip()]
    ctx.progress({"sentences": len(sentences)})
    return {"summary": ". ".join(sentences[:2]) + ".", "sentences": len(sentences)}


@agent.task("researcher")
def research(input, ctx):
    if "compensates" in input:
        # A compensation task: undo what the failed task had started.
        return {"undone": input["compensates"], "released": input["input"].get("release")}
    notes = []
    for angle in ("who leads", "what changed this quarter"):
        # An interruptible pause: true once the task is cancelled or the lease is lost, and
        # then whatever the handler returns is not reported.
        if ctx.wait_cancelled(0.5):
            return None
        notes.append(f"{input['topic']}: {angle}")
    # Side effects keyed by ctx.idempotency_key happen once per attempt, however often the
    # attempt is delivered.
    return {"topic": input["topic"], "notes": notes, "attempt": ctx.attempt}


if __name__ == "__main__":
    agent.run()
