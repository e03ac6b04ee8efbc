"""Schemathesis hooks for `.ci/schemathesis`."""

import os
import re

import schemathesis

# The longest a claim waits here: a claim with no task ready waits up to `wait_ms` (at most
# 60,000) for one, by design (a long poll). The schema's whole range is still generated and
# sent when out of it (negative tests); a valid wait is shortened so that the run stays short.
CLAIM_WAIT_MS_IN_TESTS = 200


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.operation.path == "/v1/agents/{id}/claim" and isinstance(case.body, dict):
        wait = case.body.get("wait_ms")
        if isinstance(wait, (int, float)) and not isinstance(wait, bool):
            if CLAIM_WAIT_MS_IN_TESTS < wait <= 60_000:
                case.body["wait_ms"] = CLAIM_WAIT_MS_IN_TESTS


# With tokens configured, a signal's sender is the token's name and `by` is refused (400
# `invalid_query`), by design: a name a client gives could be anyone's. The document cannot
# say "only without tokens", so in the run with tokens a valid `by` is left out (an invalid one
# is still sent, and still refused).
WITH_TOKENS = os.environ.get("BATON_ST_WITH_TOKENS") == "1"
NO_CONTROL = re.compile(r"^[^\x00-\x1f\x7f-\x9f]{1,128}$")


@schemathesis.hook("before_call")
def leave_out_by_with_tokens(context, case, **kwargs):
    if not WITH_TOKENS or case.operation.path != "/v1/workflows/{id}/signals/{name}":
        return
    by = (case.query or {}).get("by")
    if isinstance(by, str) and NO_CONTROL.match(by):
        del case.query["by"]
