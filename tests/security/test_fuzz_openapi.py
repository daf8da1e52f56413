"""Fuzz the whole API from its own OpenAPI document (schemathesis), authenticated with a Bearer key.

Every operation gets schema-valid and schema-invalid requests. Every response must not be a 5xx, must
use a documented status code, content type and headers, and must match its documented schema; a
schema-valid request must be accepted and a schema-invalid one refused. A second pass pins the path ids
to a real job, checkpoint and dataset of the caller, so generated queries, headers and bodies reach the
code behind the 404 too. Bounded: a few dozen examples per operation and mode (about a minute).

The operations are driven from a plain test with Hypothesis rather than `schema.parametrize()`: the
lazy fixture loader of the installed schemathesis does not run under pytest 9 (it sets Node._nodeid).
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

# Rules between fields that JSON Schema cannot state, checked by the spec model and the service: a
# builtin model fitting its task (`mlp` cannot do causal_lm), a builtin dataset serving the task, LoRA
# only on transformers, n_embd divisible by n_head, optimizer_args that the chosen optimizer takes, an
# uploaded dataset that exists for this owner and fits the task, a from_job that succeeded, the server's
# caps. A request breaking one is schema-valid yet rightly refused with a 422 that names the field, so
# 422 is an accepted answer to a schema-valid request; every other check still applies to it.
# 404 and 409 are the answers for a drawn id that does not exist or a state that forbids the verb.
ACCEPTED_FOR_VALID_DATA = ["200", "201", "204", "404", "409", "422"]
MAX_EXAMPLES = 15

CONFIG = f"""
[checks.positive_data_acceptance]
expected-statuses = {json.dumps(ACCEPTED_FOR_VALID_DATA)}
"""


def _fuzz(app: Any, headers: dict[str, str], *, methods: set[str] | None = None,
          path_parameters: dict[str, str] | None = None) -> list[str]:
    config = schemathesis.config.SchemathesisConfig.from_str(CONFIG)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config, headers=headers)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if methods is not None and operation.method.upper() not in methods:
            continue
        operations += 1
        pinned = {k: v for k, v in (path_parameters or {}).items() if "{" + k + "}" in operation.path}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=pinned or None)

            @given(case=strategy)
            @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            def run(case: Any) -> None:
                case.call_and_validate(headers=headers)

            try:
                run()
            except Unsatisfiable:  # an operation without inputs has no invalid requests to draw
                assert mode is GenerationMode.NEGATIVE, operation.label
            except Exception as exc:  # collect every operation's finding, then fail once with all of them
                failures.append(f"{operation.label} [{mode.value}]: {str(exc)[:3000]}")
    assert operations > 0
    return failures


def test_every_operation_with_drawn_ids(app, make_owned) -> None:  # noqa: ANN001
    alice = make_owned("alice")
    failures = _fuzz(app, alice.headers)
    assert not failures, "\n\n".join(failures)


def test_reads_of_a_real_job_checkpoint_and_dataset(app, make_owned) -> None:  # noqa: ANN001
    alice = make_owned("alice")
    pinned = {"job_id": alice.job_id, "checkpoint_id": alice.checkpoint_id, "dataset_id": alice.dataset_id}
    failures = _fuzz(app, alice.headers, methods={"GET"}, path_parameters=pinned)
    assert not failures, "\n\n".join(failures)
