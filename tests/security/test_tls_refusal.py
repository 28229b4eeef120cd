"""A server certificate that fails verification is permanent: send and a pending receive() fail at once with
``TLSVerificationFailed`` instead of retrying until the timeout (issue 13 item 4)."""

from __future__ import annotations

import asyncio
import time

import pytest

import layers

from .tls import TLSCase

FAIL_WITHIN = 3.0


def test_unverifiable_certificate_fails_send_and_pending_receive_fast(tls_case: TLSCase) -> None:
    layer = tls_case.layer(ca=tls_case.pki.wrong_ca)

    async def attempt() -> dict[str, float]:
        took: dict[str, float] = {}
        waiting = asyncio.ensure_future(layer.receive(await layer.new_channel()))
        try:
            await asyncio.sleep(0.05)
            for what, call in (("send", layer.send("tls.refused", {"x": 1})), ("pending receive", waiting)):
                started = time.monotonic()
                with pytest.raises(layers.TLSVerificationFailed, match="(?i)certificate|verif"):
                    await asyncio.wait_for(call, FAIL_WITHIN)
                took[what] = time.monotonic() - started
        finally:
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            await layer.close()
        return took

    took = asyncio.run(asyncio.wait_for(attempt(), 20))
    assert max(took.values()) < FAIL_WITHIN, took
