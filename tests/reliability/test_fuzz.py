"""Fuzzing: schemathesis sends schema-valid and schema-violating requests to every operation.

It reads the ledger's own ``/openapi.json`` and calls the WSGI app in process, on each backend.
No response may be a 500, break the documented schema (status, content type, headers, body),
accept a request that violates the schema, or carry a traceback, SQL, a driver's name or the
database password. A business rule the schema cannot express (a transfer to the same account)
may refuse a schema-valid request; that is not counted as a failure.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import schemathesis
import schemathesis.checks
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Ok

from ledger.services import accounts, customers

from ._leaks import body_leaks, strings_in
from ._scale import scaled
from .conftest import LedgerFactory, LogRecorder, Target

EXAMPLES = scaled(12, 100)
"""Examples per operation and per mode (schema-valid, schema-violating)."""
MINIMUM_EXAMPLES = scaled(100, 1000)


def test_fuzzed_requests_never_break_the_api(
    target: Target,
    ledger_app: LedgerFactory,
    figures: dict[str, Any],
    logs: LogRecorder,
) -> None:
    """Every generated request gets a documented, clean answer; none gets a 500."""
    app = ledger_app(target.url)
    with app.app_context():  # rows for the small ids that the fuzzer likes to pick
        for n in range(3):
            customer = customers.register_customer(f"Fuzz {n}", f"fuzz{n}@example.com")
            accounts.deposit(customer.account.id, 10_000)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the OpenAPI document is invalid: {result.err()}"
        operations.append(result.ok())
    examples: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    def check(case: Case[Any], mode: GenerationMode) -> None:
        response = case.call()
        with lock:
            examples[f"{case.operation.label} ({mode.value})"] += 1
            statuses[str(response.status_code)] += 1
        case.validate_response(
            response, excluded_checks=[schemathesis.checks.positive_data_acceptance]
        )
        sent = [
            *strings_in(case.body),
            *strings_in(case.query),
            *strings_in(case.headers),
            *(str(v) for v in (case.path_parameters or {}).values()),
        ]
        found = body_leaks(response.content, password=target.password, echoed=sent)
        assert not found, f"{case.operation.label} {response.status_code} leaks {found}"

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: Case[Any]) -> None:
                check(case, mode)  # noqa: B023 - called right away, within this iteration

            try:
                fuzz()
            except Unsatisfiable:  # nothing to negate: the operation takes no input
                continue
            except (Exception, BaseExceptionGroup) as error:  # schemathesis' FailureGroup
                failures.append(f"{operation.label} ({mode.value}): {error}")  # is the latter

    total = sum(examples.values())
    figures.update(
        backend=target.backend,
        operations=len(operations),
        examples=total,
        examples_by_operation=dict(sorted(examples.items())),
        statuses=dict(sorted(statuses.items())),
        failures=len(failures),
    )
    assert not failures, "\n\n".join(failures)
    assert total >= MINIMUM_EXAMPLES
    if target.password:
        assert target.password not in logs.text()
