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

# field NAME: a top-level string or number of the input, empty if absent.
field() {
    printf '%s' "$input" | python3 -c '
import json, sys
v = json.load(sys.stdin)
v = v.get(sys.argv[1], "") if isinstance(v, dict) else ""
print(v if isinstance(v, (str, int, float)) else json.dumps(v))' "$1"
}

# upstream: the results of this task's dependencies, as a JSON list, read from the API
# (BATON_URL and BATON_TASK_ID come from `baton agent`; BATON_TOKEN if the server wants one).
upstream() {
    python3 - <<'PY'
import json, os, urllib.request
def get(path):
    req = urllib.request.Request(os.environ["BATON_URL"] + path)
    if os.environ.get("BATON_TOKEN"):
        req.add_header("Authorization", "Bearer " + os.environ["BATON_TOKEN"])
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.load(res)
task = get("/v1/tasks/" + os.environ["BATON_TASK_ID"])
print(json.dumps([get("/v1/tasks/" + d["id"])["result"] for d in task["dependencies"]]))
PY
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
    upstream | python3 -c 'import json, sys
research = json.load(sys.stdin)
notes = [n for r in research for n in r["notes"]]
print(json.dumps({"title": sys.argv[1], "paragraphs": notes}))' "$(field title)"
    ;;
review)
    upstream | python3 -c 'import json, sys
draft = json.load(sys.stdin)[0]
print(json.dumps({"approved": len(draft["paragraphs"]) > 0, "comments": ["cite the sources"]}))'
    ;;
publish)
    approved=$(upstream | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["approved"])')
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
