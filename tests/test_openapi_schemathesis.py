"""Property-based testing of the intake API from its own OpenAPI document, against the real agent process.

``venue-agent run`` (bearer token set) and ``venue-agent pos-sim`` run as separate processes on loopback;
schemathesis loads ``GET /openapi.json`` from the agent and sends generated requests, valid and invalid, to
every operation, then walks the OpenAPI links (POST /v1/orders -> GET/PUT/cancel/... by ``order_id``).
Every check schemathesis has is on. The run is seeded and bounded so that CI on two cores stays within minutes.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from openapi_spec_validator import validate
from schemathesis.generation.modes import GenerationMode

from tests.test_crash_recovery import _child_env, _config_text, free_port

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).with_name("venue-agent")
TOKEN = "schemathesis-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Every check; the run is derandomized (same seed, same cases) and bounded per operation.
CONFIG = """
seed = 11
[generation]
max-examples = 30
deterministic = true
[checks]
enabled = true

# An order body can be schema-valid and still break a business rule JSON Schema cannot express (total =
# items + charges - discounts, venue_id = venue.id, ...). The document lists those rules on these operations'
# 422 response, so a 422 problem+json is the conformant answer there; every other status stays as strict.
[[operations]]
include-operation-id = ["submitOrder", "replaceOrder", "payOrder"]
checks.positive_data_acceptance.expected-statuses = ["2XX", 401, 404, 409, 422]
"""


def _wait(url: str, popen: subprocess.Popen[bytes], log: Path, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            pytest.fail(f"{popen.args} exited with {popen.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, headers=AUTH, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(f"{url} did not answer 200 within {timeout} s")


@pytest.fixture(scope="module", name="agent_url")
def _agent_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start the POS simulator and the agent (bearer token set) as processes; yield the agent's base URL."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    sim_port, agent_port = free_port(), free_port()
    config = tmp / "agent.toml"
    text = _config_text(tmp, agent_port=agent_port, sim_port=sim_port)
    config.write_text(text.replace("[intake]\n", f'[intake]\ntoken = "{TOKEN}"\n'), encoding="utf-8")
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name, args in (
            ("pos-sim", ["pos-sim", "--port", str(sim_port)]),
            ("agent", ["run", "--config", str(config)]),
        ):
            log = tmp / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [str(BIN), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=_child_env()
                )
            started.append(popen)
            probe = f"http://127.0.0.1:{sim_port}/_sim/faults" if name == "pos-sim" else None
            _wait(probe or f"http://127.0.0.1:{agent_port}/v1/health", popen, log)
        yield f"http://127.0.0.1:{agent_port}"
    finally:
        for popen in started:
            popen.kill()
            popen.wait(timeout=5)


@pytest.fixture(scope="module", name="api_schema")
def _api_schema(agent_url: str) -> Any:
    """The agent's OpenAPI document as schemathesis loads it, with the bearer token and every check on."""
    config = schemathesis.Config.from_str(CONFIG)
    config.projects.default.update(headers=AUTH, base_url=agent_url)
    return schemathesis.openapi.from_url(f"{agent_url}/openapi.json", config=config)


def test_openapi_document_is_valid_openapi_3(agent_url: str) -> None:
    """``GET /openapi.json`` is a valid OpenAPI 3.1 document (no auth needed to read it)."""
    document = httpx.get(f"{agent_url}/openapi.json", timeout=5).json()
    assert document["openapi"].startswith("3.")
    validate(document)


# schemathesis' own pytest plugin (from_fixture) does not run on pytest 9, so each operation is driven here.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_conforms(api_schema: Any, mode: GenerationMode) -> None:
    """Generated requests, valid and invalid, get answers that conform to the document under every check."""
    failures: dict[str, str] = {}
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[hypothesis.HealthCheck.filter_too_much, hypothesis.HealthCheck.too_slow],
        )
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        def conforms(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=AUTH)

        try:
            conforms()
        except hypothesis.errors.Unsatisfiable:
            # A path parameter typed only "string" has no schema-invalid value: nothing negative to send.
            assert mode is GenerationMode.NEGATIVE, operation.label
        except Exception as exc:  # every operation's failure is reported together
            failures[operation.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())


# Bounded by max_examples x stateful_step_count: 64 steps take about 65 s here (150 took 120 s, a tenth of CI's
# budget). Generating big order bodies takes most of it; on a loaded 2-core machine it can pass the default 120 s.
@pytest.mark.timeout(360)
def test_stateful_order_lifecycle(api_schema: Any) -> None:
    """Following the links from POST /v1/orders (by ``order_id``) keeps every answer conformant."""
    machine = api_schema.as_state_machine()
    machine.run(
        settings=hypothesis.settings(
            max_examples=8,
            deadline=None,
            derandomize=True,
            database=None,
            stateful_step_count=8,
            suppress_health_check=list(hypothesis.HealthCheck),
        )
    )


def test_findings_fixed_on_the_real_process(agent_url: str) -> None:
    """The four findings schemathesis made, each asked directly: empty enum, 401 documented, Allow on 405, if/then."""
    empty_state = httpx.get(f"{agent_url}/v1/orders?state=", headers=AUTH, timeout=5)
    assert empty_state.status_code == 422
    assert empty_state.json()["errors"][0]["loc"] == ["query", "state"]
    document = httpx.get(f"{agent_url}/openapi.json", timeout=5).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation["responses"]["401"]["content"]
            assert "application/problem+json" in content, f"{method.upper()} {path}"
    wrong_method = httpx.put(f"{agent_url}/v1/orders", headers=AUTH, timeout=5)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "GET, HEAD, POST"
    item_405 = httpx.delete(f"{agent_url}/v1/orders/ord_1", headers=AUTH, timeout=5)
    assert (item_405.status_code, item_405.headers["allow"]) == (405, "GET, HEAD, PUT")
    rules = document["components"]["schemas"]["Fulfillment"]["allOf"]
    assert {r["if"]["properties"]["type"]["const"]: r["then"]["required"] for r in rules} == {
        "dine_in": ["table"],
        "delivery": ["address"],
    }
