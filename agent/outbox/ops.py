"""Every outbox write in one namespace, for call sites not yet moved to the modules by concern.

The writes live in ``events``, ``transitions``, ``print_jobs``, ``intake`` and ``retention``; new code
imports those. ``agent.dispatch.dispatcher`` still reads ``ops.<write>`` (it is being changed elsewhere).
"""

from __future__ import annotations

from agent.outbox.events import add_alert, add_event, kv_put
from agent.outbox.intake import (
    FRESH_KEY_AFTER,
    SubmitResult,
    cancel,
    mark_paid,
    replace,
    requeue_failed,
    resubmit,
    submit,
)
from agent.outbox.print_jobs import (
    add_print_job,
    copies_printed,
    finish_print_job,
    recover_print_jobs,
    request_fallback,
    request_reprint,
    retry_print_jobs_now,
    route_print_job,
    start_print_job,
    unconfirmed_print_job,
)
from agent.outbox.retention import prune_component_events, purge
from agent.outbox.transitions import (
    claim,
    claim_probe,
    fail_overdue,
    fallback_candidates,
    fetch,
    promote,
    recover_in_doubt,
    require,
    transition,
)

__all__ = [
    "FRESH_KEY_AFTER",
    "SubmitResult",
    "add_alert",
    "add_event",
    "add_print_job",
    "cancel",
    "claim",
    "claim_probe",
    "copies_printed",
    "fail_overdue",
    "fallback_candidates",
    "fetch",
    "finish_print_job",
    "kv_put",
    "mark_paid",
    "promote",
    "prune_component_events",
    "purge",
    "recover_in_doubt",
    "recover_print_jobs",
    "replace",
    "request_fallback",
    "request_reprint",
    "requeue_failed",
    "require",
    "resubmit",
    "retry_print_jobs_now",
    "route_print_job",
    "start_print_job",
    "submit",
    "transition",
    "unconfirmed_print_job",
]
