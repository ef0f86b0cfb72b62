"""The receiver's scripted misbehaviours do what the engine tests rely on (checked with plain aiohttp)."""

from __future__ import annotations

import asyncio
import time

import aiohttp

from support.receiver import (
    CLOSE,
    DRIP,
    ENDLESS,
    HANG,
    HUGE,
    HUGE_BODY_BYTES,
    ConcurrencyGauge,
    Receiver,
)


async def test_slow_redirect_and_huge_answers() -> None:
    async with Receiver() as rx, aiohttp.ClientSession() as http:
        rx.script("/slow", [("slow", 0.3), ("slow", 0.0, 503)])
        rx.script("/moved", [("redirect", 308, "http://127.0.0.1:1/elsewhere")])
        rx.script("/huge", [HUGE, ("huge", 500)])
        t0 = time.monotonic()
        async with http.post(rx.url_for("/slow"), data=b"{}") as resp:
            assert resp.status == 204
        assert time.monotonic() - t0 >= 0.3
        async with http.post(rx.url_for("/slow"), data=b"{}") as resp:
            assert resp.status == 503
        async with http.post(rx.url_for("/moved"), data=b"{}", allow_redirects=False) as resp:
            assert resp.status == 308
            assert resp.headers["Location"] == "http://127.0.0.1:1/elsewhere"
        for status in (200, 500):
            async with http.post(rx.url_for("/huge"), data=b"{}") as resp:
                assert resp.status == status
                assert len(await resp.read()) == HUGE_BODY_BYTES
        assert [r.status for r in rx.requests] == [204, 503, 308, 200, 500]


async def test_drip_sends_one_byte_per_second_and_counts_as_in_flight() -> None:
    async with Receiver() as rx, aiohttp.ClientSession() as http:
        rx.script("/drip", [DRIP])
        async with http.post(rx.url_for("/drip"), data=b"{}") as resp:
            assert resp.status == 200
            t0 = time.monotonic()
            got = await resp.content.readexactly(2)
            assert got == b"xx"
            assert 0.8 <= time.monotonic() - t0 <= 2.0
            assert rx.in_flight == 1
        await rx.wait_for(lambda r: r.in_flight == 0, timeout_s=3)
        assert rx.peak_in_flight == 1


async def test_endless_body_ends_when_the_client_hangs_up() -> None:
    async with Receiver() as rx, aiohttp.ClientSession() as http:
        rx.script("/endless", [ENDLESS])
        async with http.post(rx.url_for("/endless"), data=b"{}") as resp:
            assert resp.status == 200
            assert len(await resp.content.readexactly(1_000_000)) == 1_000_000
            resp.close()
        await rx.wait_for(lambda r: r.in_flight == 0, timeout_s=3)


async def test_close_drops_the_keep_alive_connection_after_answering() -> None:
    async with Receiver() as rx:
        rx.script("/close", [CLOSE])
        reader, writer = await asyncio.open_connection(rx.host, rx.port)
        try:
            writer.write(b"POST /close HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            async with asyncio.timeout(3):
                # A keep-alive answer (no "Connection: close"), then the end of the stream.
                head = await reader.readuntil(b"\r\n\r\n")
                rest = await reader.read()
        finally:
            writer.close()
        assert head.startswith(b"HTTP/1.1 204"), head
        assert b"connection: close" not in head.lower(), head
        assert rest == b""


async def test_gauges_count_concurrent_requests_per_path_and_across_receivers() -> None:
    shared = ConcurrencyGauge()
    async with (
        Receiver(gauges=[shared]) as rx1,
        Receiver(gauges=[shared]) as rx2,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5)) as http,
    ):
        for rx in (rx1, rx2):
            rx.default = HANG

        async def post(url: str) -> None:
            try:
                async with http.post(url, data=b"{}"):
                    pass
            except TimeoutError:
                pass

        async with asyncio.TaskGroup() as tg:
            for _ in range(3):
                tg.create_task(post(rx1.url_for("/h")))
            tg.create_task(post(rx1.url_for("/other")))
            for _ in range(2):
                tg.create_task(post(rx2.url_for("/h")))
            await rx1.wait_for(lambda r: r.in_flight == 4, timeout_s=3)
            await rx2.wait_for(lambda r: r.in_flight == 2, timeout_s=3)
            assert shared.current == 6
        await rx1.wait_for(lambda r: r.in_flight == 0, timeout_s=3)
        await rx2.wait_for(lambda r: r.in_flight == 0, timeout_s=3)
        assert (rx1.peak_in_flight, rx1.peak_for("/h"), rx1.peak_for("/other")) == (4, 3, 1)
        assert (rx2.peak_in_flight, shared.peak, shared.current) == (2, 6, 0)
        rx1.reset_peaks()
        assert rx1.peak_in_flight == 0 and rx1.peak_for("/h") == 0
