"""examples/Dockerfile and its .dockerignore: paths that exist, extras that are known."""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from tests.support.deployment import (
    EXAMPLES,
    RECEIVER_COMMAND,
    ROOT,
    service,
    setup_cfg,
)


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (EXAMPLES / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]


def test_dockerfile_copies_paths_that_exist_and_installs_known_extras(
        compose: dict[str, Any]) -> None:
    instructions = dockerfile_instructions()
    for kind, rest in instructions:
        if kind == "COPY":
            *sources, _ = shlex.split(rest)
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    extras = set(setup_cfg()["options.extras_require"])
    installs = " ".join(rest for kind, rest in instructions
                        if kind == "RUN" and "pip install" in rest)
    for wanted in re.findall(r"\.\[([\w,-]+)\]", installs):
        assert set(wanted.split(",")) <= extras
    assert "postgres" in installs and "scikit-learn" in installs
    # The image's default command is the receiver, exactly as compose and k8s start it.
    (cmd,) = [json.loads(rest) for kind, rest in instructions if kind == "CMD"]
    assert cmd == RECEIVER_COMMAND == service(compose, "receiver")["command"]
    workdir = next(rest for kind, rest in instructions if kind == "WORKDIR")
    assert ("COPY", "examples ./examples") in instructions and workdir.startswith("/")


def test_dockerignore_keeps_the_virtualenv_out_of_the_context() -> None:
    ignored = (EXAMPLES / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
