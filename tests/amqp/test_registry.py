"""The registry queue ``flush`` reads: it lives as long as the names it lists may matter, then expires by itself
(it used to stay on the broker forever, one per prefix ever used).  Lifetimes are shortened through the topology."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest

from layers_amqp import AMQPChannelLayer
from layers_amqp.connection import ChannelError
from layers_amqp.topology import Topology


@dataclass(frozen=True)
class QuickTopology(Topology):
    """Registry records live 1 s, the registry 2 s after its last declaration."""

    @property
    def registry_ttl_ms(self) -> int:
        return 1000


def quick(layer: AMQPChannelLayer) -> AMQPChannelLayer:
    layer.topology = QuickTopology(layer.prefix, layer.expiry, layer.group_expiry)
    return layer


async def registry_exists(layer: AMQPChannelLayer) -> bool:
    link = layer._state().backend.link
    await link.ready()
    try:
        await link.declare(layer.topology.registry, None, passive=True)
    except ChannelError as exc:
        assert exc.code == 404
        return False
    return True


def test_registry_expires_after_flush(make_layer: Any) -> None:
    async def main() -> None:
        layer = quick(make_layer())
        await layer.send("reg.named", {"n": 1})
        assert await registry_exists(layer)
        await layer.flush()
        await asyncio.sleep(2.8)  # x-expires 2 s (the broker checks lazily, within a few hundred ms)
        assert not await registry_exists(layer)
        await layer.close()

    asyncio.run(main())


def test_registry_renewed_while_names_are_registered(make_layer: Any) -> None:
    """A layer that keeps declaring queues keeps the registry alive (renewed every half record TTL), so flush
    still finds every queue declared over several registry lifetimes."""

    async def main() -> None:
        layer = quick(make_layer())
        for i in range(8):
            await layer.send(f"reg.named{i}", {"n": i})  # a new queue (and record) every 0.6 s
            await asyncio.sleep(0.6)
        assert await registry_exists(layer)
        await layer.send("reg.last", {"n": "last"})
        await layer.flush()
        link = layer._state().backend.link
        with pytest.raises(ChannelError) as missing:
            await link.declare(layer.topology.queue("reg.last"), None, passive=True)
        assert missing.value.code == 404
        await layer.close()

    asyncio.run(main())


def test_registry_deleted_under_a_layer_is_declared_again(make_layer: Any) -> None:
    async def main() -> None:
        layer = quick(make_layer())
        await layer.send("reg.before", {"n": 0})
        link = layer._state().backend.link
        await link.delete(layer.topology.registry)  # an operator, or a cleanup script
        await asyncio.sleep(0.6)  # past half a record TTL: the next record renews (here: re-creates) it
        await layer.send("reg.after", {"n": 1})
        assert await registry_exists(layer)
        await layer.flush()
        with pytest.raises(ChannelError):
            await link.declare(layer.topology.queue("reg.after"), None, passive=True)
        await layer.close()

    asyncio.run(main())


def _queues_of(prefix: str) -> list[str]:
    listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "--no-table-headers"],
                             capture_output=True, text=True, timeout=60, check=True)
    return [name for name in listing.stdout.split() if name.startswith(prefix)]


@pytest.mark.skipif(shutil.which("rabbitmqctl") is None, reason="needs rabbitmqctl to list the broker's queues")
def test_drop_leaves_nothing_of_the_prefix(url: str, prefix: str) -> None:
    async def main() -> None:
        layer = AMQPChannelLayer(url, prefix=prefix)  # not make_layer: its clean-up flush would declare again
        local = await layer.new_channel()
        for channel in ("drop.named", local):
            await layer.group_add("drop.group", channel)
            await layer.send(channel, {"n": 1})
        assert await asyncio.to_thread(_queues_of, prefix)
        await layer.drop()
        await layer.close()

    asyncio.run(main())
    assert _queues_of(prefix) == []
