"""``symmetric_encryption_keys`` on every backend: nothing readable at rest, rotation, unknown keys, peer keys.

"At rest" is read under the layer (:meth:`Target.stored`): the Redis list element, the table row, the queued AMQP
message.  Only payloads are encrypted: channel names, group names and membership stay readable on the server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest

from layers.serialization import EncryptedSerializer, MsgpackSerializer

from .backends import Target

Run = Callable[..., Any]

OLD, NEW, OTHER = "old-key-0123456789", "new-key-abcdefghij", "someone-elses-key"
SECRET = "TOP-SECRET-PLAINTEXT-7f3a"
SECRET_BYTES = b"\x00RAW-SECRET-BYTES\xff"


def _message(n: int = 0) -> dict[str, Any]:
    return {"type": "chat.message", "text": SECRET, "blob": SECRET_BYTES, "n": n}


def _readable(raw: list[bytes]) -> bool:
    return any(SECRET.encode() in item or SECRET_BYTES in item for item in raw)


def test_nothing_readable_at_rest(target: Target, run: Run) -> None:
    plain = target.layer(prefix=target.prefix + "p")
    secret = target.layer(symmetric_encryption_keys=[NEW])
    for layer in (plain, secret):
        channel = run(layer.new_channel())
        queue = channel.split("!")[0] + "!"
        run(layer.group_add("enc-group", channel))
        run(layer.send("enc.named", _message(1)))
        run(layer.send(channel, _message(2)))
        run(layer.group_send("enc-group", _message(3)))
        raw = target.stored(layer, "enc.named") + target.stored(layer, queue)
        assert len(raw) == 3, raw
        # The check can fail: without keys the same bytes are in plain sight.
        assert _readable(raw) is (layer is plain)
        assert run(layer.receive("enc.named")) == _message(1)
        assert [run(layer.receive(channel)) for _ in range(2)] == [_message(2), _message(3)]


def test_key_rotation_first_key_encrypts_all_decrypt(target: Target, run: Run) -> None:
    before = target.layer(symmetric_encryption_keys=[OLD])
    during = target.peer(before, symmetric_encryption_keys=[NEW, OLD])
    after = target.peer(before, symmetric_encryption_keys=[NEW])
    run(before.send("enc.rotate", _message(1)))
    assert run(during.receive("enc.rotate")) == _message(1)  # reads what the old key wrote
    run(during.send("enc.rotate", _message(2)))
    assert run(after.receive("enc.rotate")) == _message(2)  # during writes with the first (new) key
    # Raw proof that the first key is the one that encrypts: the new key alone decrypts the stored bytes.
    run(during.send("enc.rotate", _message(3)))
    (raw,) = target.stored(during, "enc.rotate")
    assert _decrypts(raw, [NEW]) and not _decrypts(raw, [OLD])
    assert run(after.receive("enc.rotate")) == _message(3)


def _decrypts(raw: bytes, keys: list[str]) -> bool:
    from cryptography.fernet import Fernet, InvalidToken

    from layers.serialization import _derive_key

    token = raw[raw.index(b"gAAAAA"):]  # the Fernet token inside the item (and the Redis framing)
    try:
        Fernet(_derive_key(keys[0])).decrypt(token)
        return True
    except InvalidToken:
        return False


@pytest.mark.parametrize("kind", ["named", "process"])
def test_unknown_key_is_logged_and_dropped(target: Target, run: Run, kind: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    reader = target.layer(symmetric_encryption_keys=[NEW])
    stranger = target.peer(reader, symmetric_encryption_keys=[OTHER])
    plain = target.peer(reader, symmetric_encryption_keys=None)
    friend = target.peer(reader, symmetric_encryption_keys=[NEW])
    channel = "enc.unknown" if kind == "named" else run(reader.new_channel())

    async def scenario() -> dict[str, Any]:
        pending = asyncio.ensure_future(reader.receive(channel))
        await asyncio.sleep(0.2)
        await stranger.send(channel, _message(1))  # encrypted under a key the reader does not hold
        await plain.send(channel, _message(2))  # not encrypted at all
        await asyncio.sleep(0.3)
        await friend.send(channel, _message(3))
        return await pending

    with caplog.at_level(logging.WARNING, logger="layers"):
        assert run(scenario()) == _message(3)
    dropped = [r.getMessage() for r in caplog.records if "undecodable" in r.getMessage()]
    assert len(dropped) == 2, dropped
    assert not any(SECRET in text for text in dropped)  # the log does not leak what it could not decrypt
    run(friend.send(channel, _message(4)))
    assert run(reader.receive(channel)) == _message(4)


# -- compatibility with channels_redis's key derivation ------------------------------------------------------


def test_keys_derived_like_channels_redis() -> None:
    serializers = pytest.importorskip("channels_redis.serializers")
    message = {"type": "x", "text": "héllo", "data": b"\x00\x01", "n": [1, 2.5, None]}
    for key in ("a-django-secret", b"bytes key \xff", "k" * 200):
        theirs = serializers.MsgPackSerializer(symmetric_encryption_keys=[key])
        ours = EncryptedSerializer(MsgpackSerializer(), [key])
        assert ours.loads(theirs.serialize(message)) == message  # their token, our key
        assert theirs.deserialize(ours.dumps(message)) == message  # our token, their key
        # Fernet level: their crypter decrypts our raw token to our plaintext, and the reverse.
        plaintext = MsgpackSerializer().dumps(message)
        assert theirs.crypter.decrypt(ours.dumps(message)) == plaintext
        assert ours._fernet.decrypt(theirs.crypter.encrypt(plaintext)) == plaintext
    rotated = EncryptedSerializer(MsgpackSerializer(), ["new", "old"])
    old_site = serializers.MsgPackSerializer(symmetric_encryption_keys=["old"])
    assert rotated.loads(old_site.serialize(message)) == message


def test_wrong_key_material_is_refused_not_misread() -> None:
    ours = EncryptedSerializer(MsgpackSerializer(), ["one"])
    token = ours.dumps({"type": "x"})
    with pytest.raises(ValueError, match="not encrypted with any"):
        EncryptedSerializer(MsgpackSerializer(), ["two"]).loads(token)
    tampered = token[:-5] + bytes([token[-5] ^ 1]) + token[-4:]
    with pytest.raises(ValueError):
        ours.loads(tampered)
