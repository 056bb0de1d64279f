"""Kommo webhook bodies as Kommo sends them (form-encoded, PHP-style keys), for the tests' deals."""

from __future__ import annotations

from urllib.parse import urlencode

from tests.conftest import DEMO_STATUS, SUBDOMAIN


def status_body(lead: int, status: int, updated_at: int) -> bytes:
    """An account webhook's status change (2021 shape, with both names of the change time)."""
    return urlencode(
        [
            ("account[subdomain]", SUBDOMAIN),
            ("account[id]", "16503244"),
            ("leads[status][0][id]", str(lead)),
            ("leads[status][0][name]", "Demo call - ACME"),
            ("leads[status][0][status_id]", str(status)),
            ("leads[status][0][old_status_id]", "61234502"),
            ("leads[status][0][pipeline_id]", "7712345"),
            ("leads[status][0][updated_at]", str(updated_at)),
            ("leads[status][0][last_modified]", str(updated_at)),
        ]
    ).encode()


def delete_body(lead: int, status: int = DEMO_STATUS) -> bytes:
    """The 2025 capture: a delete carries only id, status and pipeline, and no time."""
    return urlencode(
        [
            ("account[subdomain]", SUBDOMAIN),
            ("account[id]", "16503244"),
            ("account[_links][self]", f"https://{SUBDOMAIN}.amocrm.ru"),
            ("leads[delete][0][id]", str(lead)),
            ("leads[delete][0][status_id]", str(status)),
            ("leads[delete][0][pipeline_id]", "7712345"),
        ]
    ).encode()


def restore_body(lead: int, status: int, last_modified: int | None) -> bytes:
    """A lead taken back from the trash; ``last_modified`` None leaves the time out."""
    fields = [
        ("leads[restore][0][id]", str(lead)),
        ("leads[restore][0][name]", "Demo call - ACME"),
        ("leads[restore][0][status_id]", str(status)),
        ("leads[restore][0][pipeline_id]", "7712345"),
        ("leads[restore][0][responsible_user_id]", "654094"),
        ("account[subdomain]", SUBDOMAIN),
    ]
    if last_modified is not None:
        fields.append(("leads[restore][0][last_modified]", str(last_modified)))
    return urlencode(fields).encode()


def pipeline_body(lead: int, status: int) -> bytes:
    """A Digital Pipeline "send webhook" body: five ids and the account, no time (sample 04's shape)."""
    return urlencode(
        [
            ("leads[status][0][id]", str(lead)),
            ("leads[status][0][status_id]", str(status)),
            ("leads[status][0][pipeline_id]", "7712345"),
            ("leads[status][0][old_status_id]", "61234502"),
            ("leads[status][0][old_pipeline_id]", "7712345"),
            ("account[id]", "16503244"),
            ("account[subdomain]", SUBDOMAIN),
        ]
    ).encode()
