"""Tiller's image, built from the repo's Dockerfile: what it weighs, that every Tiller service
runs in it as a user of its own (not root), and that no key or secret is in it: this run's
admin key, payload keys and TLS key reach the containers at run time only."""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from collections.abc import Iterator

from tests.compose.stack import Project, docker, running

IMAGE = "tiller:local"
TILLER_SERVICES = ("demo-engine", "router", "quota", "worker", "gateway")
# A PEM private key with a body, not a program's constant naming the header.
PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{40,}-----END")


def test_its_size_and_what_it_holds(project: Project) -> None:
    (spec,) = json.loads(docker("image", "inspect", IMAGE))
    print(f"\n{IMAGE}: {spec['Size'] / 1e6:.0f} MB")
    print(docker("history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE)[:2000])
    # The build context's other files (a checkout's .venv, .git, .tiller keys) are not in it.
    listing = docker("run", "--rm", "--network", "none", "--entrypoint", "ls", IMAGE, "-A", "/app")
    assert set(listing.split()) <= {
        "README.md", "pyproject.toml", "protos", "services", "build", "tiller.egg-info"
    }  # fmt: skip


def test_every_tiller_service_runs_as_a_user_of_its_own(project: Project) -> None:
    (spec,) = json.loads(docker("image", "inspect", IMAGE))
    assert spec["Config"]["User"] == "tiller"
    for service in TILLER_SERVICES:
        for container in running(service):
            # Every process in the container, as the host sees them (no user namespaces).
            rows = docker("top", container.name, "-o", "uid,pid,args").splitlines()[1:]
            print(f"\n{container.name}: " + "; ".join(" ".join(r.split()) for r in rows), end="")
            assert rows and all(row.split()[0] == "10001" for row in rows), rows


def test_no_key_or_secret_is_in_the_image(project: Project) -> None:
    admin_key = os.environ["TILLER_ADMIN_KEY"].encode()
    payload_keys = [
        line.split(":", 1)[1].encode() for line in os.environ["TILLER_PAYLOAD_KEYS"].split(",")
    ]
    (spec,) = json.loads(docker("image", "inspect", IMAGE))
    settings = {entry.split("=", 1)[0] for entry in spec["Config"]["Env"]}
    assert not settings & {"TILLER_ADMIN_KEY", "TILLER_PAYLOAD_KEYS", "TILLER_PAYLOAD_KEYS_FILE"}
    history = docker("history", "--no-trunc", IMAGE).encode()
    assert admin_key not in history and not any(k in history for k in payload_keys)

    # Anywhere: this run's keys, and the body of its TLS key. In text files: any private key
    # (binaries such as libgnutls carry their self-tests' published keys).
    tls_key = b"".join(project.ca.with_name("tls.key").read_bytes().splitlines()[1:-1])
    secrets = [admin_key, *payload_keys, tls_key[:48]]
    found, files = [], 0
    for path, content in _files(IMAGE):
        files += 1
        if any(secret in content for secret in secrets) or (
            b"\0" not in content and PEM_KEY.search(content)
        ):
            found.append(path)
    print(f"\nread {files} files of {IMAGE}: none holds this run's keys or a private key file")
    assert files > 1000 and found == []

    # The keys are the containers' environment, from compose.yaml's ${...} at run time.
    (gateway,) = running("gateway")[:1]
    (live,) = json.loads(docker("inspect", gateway.name))
    assert f"TILLER_PAYLOAD_KEYS={os.environ['TILLER_PAYLOAD_KEYS']}" in live["Config"]["Env"]


def _files(image: str) -> Iterator[tuple[str, bytes]]:
    """Every regular file of every layer of the image, as `docker save` writes them."""
    with subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE) as save:
        assert save.stdout is not None
        with tarfile.open(fileobj=save.stdout, mode="r|") as outer:
            for member in outer:
                if not member.name.endswith("layer.tar"):
                    continue
                layer = outer.extractfile(member)
                assert layer is not None
                with tarfile.open(fileobj=layer, mode="r|") as inner:
                    for entry in inner:
                        if entry.isfile() and (content := inner.extractfile(entry)) is not None:
                            yield entry.name, content.read()
    assert save.returncode == 0
