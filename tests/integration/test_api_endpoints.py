"""The operator API through HTTP, against a real daemon: the endpoint resource and its secret.

Creating, reading, patching (only what is named; null back to the default), disabling and deleting
an endpoint; its signing secret revealed and rotated (HMAC and ed25519), its credentials never
shown, and its stats.
"""

from __future__ import annotations

from pathlib import Path

from support.api import OPERATOR, _endpoint, api_daemon
from support.receiver import Receiver

# -- endpoints ------------------------------------------------------------------------------------


async def test_endpoint_create_get_patch_secret_stats_and_delete(dsn: str, tmp_path: Path) -> None:
    async with Receiver() as rx, api_daemon(dsn, tmp_path) as (_, c):
        ops = c[OPERATOR]
        created = await _endpoint(
            ops,
            rx.url_for("/a"),
            event_types=["order.*"],
            description="orders",
            metadata={"team": "billing"},
            settings={"total_timeout_s": 3, "retry_schedule_s": [0, 1]},
            credentials={"bearer": "s3cret-bearer", "headers": {"X-Key": "k-value"}},
        )
        secret = created["secret"]
        assert secret.startswith("whsec_") and created["public_key"] is None
        assert created["credentials"] == ["bearer", "headers"]
        ep_id = created["id"]

        got = (await ops.get(f"/v1/endpoints/{ep_id}")).ok()
        assert "secret" not in got
        assert got["event_types"] == ["order.*"] and got["metadata"] == {"team": "billing"}
        assert got["settings"] == {"total_timeout_s": 3.0, "retry_schedule_s": [0.0, 1.0]}
        listing = await ops.get("/v1/endpoints")
        for text in (listing.text, (await ops.get(f"/v1/endpoints/{ep_id}")).text):
            for hidden in (secret, "s3cret-bearer", "k-value"):
                assert hidden not in text

        # PATCH changes only what it names; a setting set to null goes back to the default.
        patched = (
            await ops.call(
                "PATCH",
                f"/v1/endpoints/{ep_id}",
                {"description": None, "settings": {"total_timeout_s": None, "max_concurrency": 2}},
            )
        ).ok()
        assert patched["description"] is None
        assert patched["settings"] == {"retry_schedule_s": [0.0, 1.0], "max_concurrency": 2}
        assert patched["url"] == created["url"] and patched["event_types"] == ["order.*"]
        assert patched["metadata"] == {"team": "billing"}
        assert patched["credentials"] == ["bearer", "headers"]
        cleared = (await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {"credentials": None})).ok()
        assert cleared["credentials"] == []
        off = (await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {"enabled": False})).ok()
        assert off["enabled"] is False
        empty = await ops.call("PATCH", f"/v1/endpoints/{ep_id}", {})
        assert "give at least one of" in empty.field_errors()[""]

        revealed = (await ops.get(f"/v1/endpoints/{ep_id}/secret")).ok()
        assert revealed == {
            "endpoint_id": ep_id,
            "secret": secret,
            "public_key": None,
            "previous_secret_until": None,
        }
        rotated = (await ops.post(f"/v1/endpoints/{ep_id}/secret/rotate", {"grace_s": 3600})).ok()
        assert rotated["secret"] != secret and rotated["secret"].startswith("whsec_")
        assert rotated["previous_secret_until"] is not None
        assert (await ops.get(f"/v1/endpoints/{ep_id}/secret")).ok()["secret"] == rotated["secret"]
        missing_grace = await ops.post(f"/v1/endpoints/{ep_id}/secret/rotate", {})
        assert missing_grace.field_errors() == {"/grace_s": "required"}

        ed = await _endpoint(ops, rx.url_for("/ed"), kind="ed25519")
        assert ed["secret"].startswith("whsk_") and ed["public_key"].startswith("whpk_")
        assert ed["secret_kind"] == "ed25519"

        stats = (await ops.get(f"/v1/endpoints/{ep_id}/stats")).ok()
        assert stats["endpoint_id"] == ep_id and stats["last_hour"]["attempts"] == 0

        (await ops.call("DELETE", f"/v1/endpoints/{ep_id}")).ok(204)
        (await ops.get(f"/v1/endpoints/{ep_id}")).problem(404)
        (await ops.call("DELETE", f"/v1/endpoints/{ep_id}")).problem(404)
