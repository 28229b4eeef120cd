"""Fetch the peers' test files at test time, cache them, and verify them against the reviewed content.

Nothing of the peers is committed here. Each suite names where its tests are published: the PyPI sdist when the
sdist ships them (channels_redis, channels_postgres), else the project's tagged source on GitHub (the channels and
channels_rabbitmq sdists ship no tests). Every file is pinned by SHA-256: the skip list in ``peer_catalog`` was
reviewed against exactly that content, so a changed file is an error, not a silent re-run.

Files land in ``$LAYERS_PEER_CACHE`` (default ``~/.cache/channel-layers/peer-suites``), one directory per
``<project>-<version>``. Without network access the suites skip with the reason; a cache can be seeded from a local
git clone instead::

    python tests/peers/peer_sources.py --from-git /path/to/channels/clone channels
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SOURCES", "PeerSource", "SourceUnavailable", "cache_root", "ensure_source"]

_DOWNLOAD_TIMEOUT = 20.0


class SourceUnavailable(Exception):
    """The peer's tests could not be fetched (offline, or the index does not answer): the suite is skipped."""


@dataclass(frozen=True)
class PeerSource:
    """Where one peer's tests come from and what they must hash to."""

    project: str  # the PyPI name
    version: str
    files: dict[str, str]  # path inside the source tree -> SHA-256 of the reviewed content
    github: str | None = None  # "owner/repo@tag" when the sdist ships no tests
    generated: tuple[str, ...] = field(default_factory=tuple)  # files made here (see _generate)

    @property
    def key(self) -> str:
        return f"{self.project}-{self.version}"


SOURCES: dict[str, PeerSource] = {
    "channels": PeerSource(
        "channels", "4.3.2", github="django/channels@4.3.2",
        files={
            "tests/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "tests/test_inmemorychannel.py": "db4984c4c763a45ce816cbac4befcbb2b37041b638841c641e79c1b467cc4c08",
            "tests/test_layers.py": "024d163e0c65b8abcb87446dbc432bf71bc26bc95e94668387a28361aa02131a",
        }),
    "channels_redis": PeerSource(
        "channels-redis", "4.3.0",
        files={
            "tests/test_core.py": "4b5e5ee4c29f746298afdbdae4469d57824f53c1325d012e9896ebe810622cac",
            "tests/test_pubsub.py": "53aef0f63a8fdf6c0f32f71d076cef148534098287941b9a6cd4b3b11dd0031a",
        }),
    "channels_postgres": PeerSource(
        "channels-postgres", "1.1.4",
        files={"tests/test_core.py": "7627e769977a097463ba91a1dcff0ddde73cfaa890a4234c5c2a37932b8935ac"}),
    "channels_rabbitmq": PeerSource(
        "channels-rabbitmq", "4.0.1", github="CJWorkbench/channels_rabbitmq@v4.0.1",
        files={
            "tests/__init__.py": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "tests/test_core.py": "8e2b752a32963429b159421520fc1ed9036d60b6ad359e01ca98a50906c77e3a",
        },
        # The module builds an SSL context from certificates its CI generates; the layer under test never uses
        # them (the factory connects to our broker), but the module cannot be imported without them.
        generated=("ssl/server.cert", "ssl/client.certchain", "ssl/client.key")),
}


def cache_root() -> Path:
    configured = os.environ.get("LAYERS_PEER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "channel-layers" / "peer-suites"


def ensure_source(source: PeerSource) -> Path:
    """The directory holding the peer's verified test files, downloading them on first use."""
    target = cache_root() / source.key
    if _complete(source, target):
        return target
    files = _download(source)
    _install(source, files, target)
    return target


def _complete(source: PeerSource, target: Path) -> bool:
    if not (target / ".verified").exists():
        return False
    for path, digest in source.files.items():
        if not (target / path).is_file() or _sha256((target / path).read_bytes()) != digest:
            return False
    return all((target / path).is_file() for path in source.generated)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT) as response:
            data: bytes = response.read()
            return data
    except OSError as exc:  # URLError, timeouts, refused connections, DNS failures
        raise SourceUnavailable(f"cannot download {url}: {exc}") from exc


def _download(source: PeerSource) -> dict[str, bytes]:
    if source.github:
        repo, _, tag = source.github.partition("@")
        try:
            return {path: _fetch(f"https://raw.githubusercontent.com/{repo}/{tag}/{path}") for path in source.files}
        except SourceUnavailable as exc:
            raise SourceUnavailable(f"{source.project} {source.version} publishes its tests only in the GitHub "
                                    f"repository {repo} (its sdist ships none), which is out of reach: {exc}") from exc
    return _from_sdist(source)


def _from_sdist(source: PeerSource) -> dict[str, bytes]:
    """The sdist through PyPI's JSON API, checked against the digest PyPI publishes for it."""
    meta = json.loads(_fetch(f"https://pypi.org/pypi/{source.project}/json"))
    releases = meta.get("releases", {}).get(source.version, [])
    sdists = [entry for entry in releases if entry.get("packagetype") == "sdist"]
    if not sdists:
        raise SourceUnavailable(f"PyPI lists no sdist of {source.project} {source.version}")
    archive = _fetch(sdists[0]["url"])
    if _sha256(archive) != sdists[0]["digests"]["sha256"]:
        raise RuntimeError(f"{sdists[0]['url']} does not match the SHA-256 PyPI publishes for it")
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        for member in tar.getmembers():
            inner = member.name.split("/", 1)[1] if "/" in member.name else ""
            if inner in source.files and member.isfile():
                extracted = tar.extractfile(member)
                assert extracted is not None
                files[inner] = extracted.read()
    return files


def _install(source: PeerSource, files: dict[str, bytes], target: Path) -> None:
    missing = sorted(set(source.files) - set(files))
    if missing:
        raise RuntimeError(f"{source.key} has no {', '.join(missing)}: the skip list must be reviewed again")
    for path, data in files.items():
        if _sha256(data) != source.files[path]:
            raise RuntimeError(
                f"{source.key}:{path} is not the reviewed content (SHA-256 {_sha256(data)}): review the peer's "
                f"changes and the skip list in tests/peers/peer_catalog.py, then update the pin")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{source.key}-", dir=target.parent))
    try:
        for path, data in files.items():
            (staging / path).parent.mkdir(parents=True, exist_ok=True)
            (staging / path).write_bytes(data)
        _generate(source, staging)
        (staging / ".verified").write_text("files match the SHA-256 pins in tests/peers/peer_sources.py\n")
        shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another test run installed it meanwhile
            if not _complete(source, target):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _generate(source: PeerSource, root: Path) -> None:
    if not source.generated:
        return
    # A throwaway self-signed certificate serves as CA, client chain and key alike.
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem_cert = cert.public_bytes(serialization.Encoding.PEM)
    pem_key = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    for path in source.generated:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(pem_key if path.endswith(".key") else pem_cert)


def seed_from_git(source: PeerSource, clone: Path) -> Path:
    """Fill the cache from a local clone (``git show <tag>:<path>``), verified by the same pins."""
    if not source.github:
        raise SystemExit(f"{source.key} comes from its PyPI sdist; pip/PyPI access is enough")
    tag = source.github.partition("@")[2]
    files = {path: subprocess.run(["git", "-C", str(clone), "show", f"{tag}:{path}"], check=True,
                                  capture_output=True).stdout for path in source.files}
    target = cache_root() / source.key
    _install(source, files, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--from-git":
        print(seed_from_git(SOURCES[sys.argv[3]], Path(sys.argv[2])))
    elif len(sys.argv) == 2 and sys.argv[1] in SOURCES:
        print(ensure_source(SOURCES[sys.argv[1]]))
    else:
        raise SystemExit(f"usage: {sys.argv[0]} [--from-git CLONE] {{{','.join(SOURCES)}}}")
