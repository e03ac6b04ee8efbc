#!/bin/sh
# A Baton agent in shell, run by `baton agent` once per task:
#
#   baton agent --capability researcher --capability writer --capability reviewer \
#               --capability publisher -- ./examples/shell-agent.sh
#
# The task's input arrives as JSON on stdin; the JSON printed on stdout is the result. A
# non-zero exit fails the attempt (stderr's end is the error message) and the task's retry
# policy decides what follows. Anything meant for people goes to stderr: stdout is the result.
# python3 reads and writes the JSON; the logic stays in shell.
set -eu

input=$(cat)

# field NAME: a top-level value of the input: a string, number or boolean as is, anything
# else as JSON; empty if absent.
field() {
    printf '%s' "$input" | python3 -c '
import json, sys
v = json.load(sys.stdin)
v = v.get(sys.argv[1], "") if isinstance(v, dict) else ""
print(v if isinstance(v, (str, int, float)) else json.dumps(v))' "$1"
}

# Compensation tasks get {"compensates": KEY, "input": ..., "error": ...} from Baton.
if [ -n "$(field compensates)" ]; then
    echo "undoing $(field compensates)" >&2
    printf '{"undone": "%s"}\n' "$(field compensates)"
    exit 0
fi

step=$(field step)
echo "$BATON_TASK_KEY: $step (attempt $BATON_ATTEMPT, idempotency key $BATON_IDEMPOTENCY_KEY)" >&2

case "$step" in
research)
    topic=$(field topic)
    sleep 1
    python3 -c 'import json, sys; print(json.dumps({"topic": sys.argv[1], "notes": [
        sys.argv[1] + ": who leads, who follows", sys.argv[1] + ": what changed this quarter"]}))' \
        "$topic"
    ;;
write)
    # `notes` holds each research task's notes, resolved by Baton from their results.
    field notes | python3 -c 'import json, sys
notes = [n for research in json.load(sys.stdin) for n in research]
print(json.dumps({"title": sys.argv[1], "paragraphs": notes}))' "$(field title)"
    ;;
review)
    field draft | python3 -c 'import json, sys
draft = json.load(sys.stdin)
print(json.dumps({"approved": len(draft["paragraphs"]) > 0, "comments": ["cite the sources"]}))'
    ;;
publish)
    approved=$(field approved)
    if [ "$approved" != "True" ]; then
        echo "the review did not approve the draft" >&2
        exit 1
    fi
    printf '{"published": true, "channel": "%s"}\n' "$(field channel)"
    ;;
*)
    echo "unknown step: $step" >&2
    exit 2
    ;;
esac
