"""The SDK's wire types follow the server's OpenAPI document (``/v1/openapi.json``), read from
the real binary: every field a dataclass decodes is a property of its schema, and every property
the schema requires is decoded. A change of
the API the SDK does not follow fails here."""

from __future__ import annotations

import dataclasses
import json
import urllib.request
from typing import Any, Dict

import pytest

import baton
from baton import types

# Each dataclass and the schema it decodes (or, for requests, encodes).
SCHEMAS: Dict[type, str] = {
    types.RetryPolicy: "RetryPolicy",
    types.Timeouts: "Timeouts",
    types.Compensation: "CompensationSpec",
    types.RateUse: "RateUse",
    types.ConcurrencyKey: "ConcurrencyKey",
    types.TaskSpec: "TaskSpec",
    types.WorkflowCreated: "WorkflowCreated",
    types.ArtifactStored: "ArtifactStored",
    types.TaskCreated: "TaskCreated",
    types.Counts: "Counts",
    types.WorkflowView: "WorkflowView",
    types.TaskSummary: "TaskSummary",
    types.TaskPage: "TaskList",
    types.Lease: "LeaseView",
    types.Deadlines: "DeadlinesView",
    types.Dependency: "DependencyView",
    types.TaskView: "TaskView",
    types.AgentView: "AgentView",
    types.AgentPage: "AgentList",
    types.ClaimedTask: "ClaimedTask",
    types.ReportAnswer: "ReportAnswer",
    types.TransitionEvent: "TransitionEventView",
    types.WorkflowEnded: "WorkflowEventView",
    types.SignalView: "SignalView",
    types.SignalDelivery: "SignalDelivery",
    types.SignalSent: "SignalSent",
    types.SignalPage: "SignalList",
    types.WaitingTask: "WaitingTask",
    types.WaitingPage: "WaitingList",
    types.ScheduleView: "ScheduleView",
    types.TriggerView: "TriggerView",
    types.SchedulePage: "ScheduleList",
    types.TriggerPage: "TriggerList",
    types.LimitView: "LimitView",
    types.RerunTask: "RerunTaskView",
    types.RerunAnswer: "RerunAnswer",
    types.WorkflowControlAnswer: "WorkflowControlAnswer",
    types.AuditEntry: "AuditEntryView",
    types.AuditPage: "AuditPage",
    types.Report: "Report",
}

# Dataclasses with no schema of their own, with why.
UNSCHEMED: Dict[type, str] = {
    types.Lagged: "the event stream's `lagged` event: its data is a bare count (GET /v1/events)",
}

# Python names for wire names that are Python keywords or builtins.
RENAMED = {"from_": "from"}


@pytest.fixture(scope="module")
def document(url: str) -> Dict[str, Any]:
    with urllib.request.urlopen(f"{url}/v1/openapi.json") as res:
        return json.load(res)


def properties(doc: Dict[str, Any], name: str) -> Dict[str, Any]:
    """A schema's properties and required ones; of a ``oneOf`` (one dataclass for every
    alternative, as :class:`baton.Report`), those of any alternative and those all require."""
    schema = doc["components"]["schemas"][name]
    if "oneOf" in schema:
        alternatives = [properties_of(doc, a) for a in schema["oneOf"]]
        required = set.intersection(*(set(a["required"]) for a in alternatives))
        merged: Dict[str, Any] = {}
        for a in alternatives:
            merged.update(a["properties"])
        return {"properties": merged, "required": sorted(required)}
    return properties_of(doc, schema)


def properties_of(doc: Dict[str, Any], schema: Dict[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"properties": {}, "required": []}
    for part in schema.get("allOf", [schema]):
        if "$ref" in part:
            part = doc["components"]["schemas"][part["$ref"].rsplit("/", 1)[1]]
        out["properties"].update(part.get("properties", {}))
        out["required"] += part.get("required", [])
    return out


@pytest.mark.parametrize("cls", list(SCHEMAS), ids=lambda c: c.__name__)
def test_a_wire_type_follows_its_schema(document: Dict[str, Any], cls: type) -> None:
    schema = properties(document, SCHEMAS[cls])
    fields = {RENAMED.get(f.name, f.name) for f in dataclasses.fields(cls)}
    unknown = fields - set(schema["properties"])
    assert not unknown, f"{cls.__name__} has fields the {SCHEMAS[cls]} schema lacks: {unknown}"
    missing = set(schema["required"]) - fields
    assert not missing, f"{cls.__name__} does not decode required {SCHEMAS[cls]} properties: {missing}"


def test_every_public_wire_type_is_checked() -> None:
    public = {
        getattr(types, name)
        for name in types.__all__
        if dataclasses.is_dataclass(getattr(types, name, None))
    }
    assert public <= set(SCHEMAS) | set(UNSCHEMED), public - set(SCHEMAS) - set(UNSCHEMED)
    assert baton.TaskView is types.TaskView
