"""The Dockerfile and .dockerignore, checked without an engine.

The Dockerfile is read with BuildKit's own parser (the `dockerfile` package); the API image's dependency set
is checked by importing the API in a process where the training stack cannot be imported.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import dockerfile
import pytest
from compose import ROOT

sys.path.insert(0, str(ROOT / "docker"))
import requirements as reqsplit  # noqa: E402  (docker/requirements.py)

# Import names of the training stack's distributions: the API image has none of them.
TRAINING_IMPORTS = {"torch", "transformers", "peft", "accelerate", "sklearn"}


def stages() -> dict[str, list[dockerfile.Command]]:
    """Instructions per build stage, by stage name."""
    result: dict[str, list[dockerfile.Command]] = {}
    current: list[dockerfile.Command] = []
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            values = [v for v in cmd.value]
            name = values[2] if len(values) == 3 and values[1].upper() == "AS" else f"#{len(result)}"
            current = result.setdefault(name, [])
        current.append(cmd)
    return result


def ancestry(name: str, all_stages: dict[str, list[dockerfile.Command]]) -> set[str]:
    """The stage and every stage it builds on or copies from."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        stage = todo.pop()
        if stage in seen or stage not in all_stages:
            continue
        seen.add(stage)
        for cmd in all_stages[stage]:
            if cmd.cmd == "FROM":
                todo.append(cmd.value[0])
            for flag in cmd.flags:
                if flag.startswith("--from="):
                    todo.append(flag.split("=", 1)[1])
    return seen


def final_user(commands: list[dockerfile.Command], all_stages: dict[str, list[dockerfile.Command]]) -> str | None:
    users = [c.value[0] for c in commands if c.cmd == "USER"]
    if users:
        return users[-1]
    parent = commands[0].value[0]
    return final_user(all_stages[parent], all_stages) if parent in all_stages else None


@pytest.mark.parametrize("target", ["api", "worker"])
def test_targets_run_as_a_non_root_user_with_a_healthcheck_and_command(target: str) -> None:
    all_stages = stages()
    assert target in all_stages
    commands = all_stages[target]
    user = final_user(commands, all_stages)
    assert user and user.split(":")[0] not in ("root", "0")
    health = [c for c in commands if c.cmd == "HEALTHCHECK"]
    assert len(health) == 1 and health[0].value[0] == "CMD"
    assert any(c.cmd == "CMD" for c in commands)
    # the base image is slim, never a full distribution image
    base = all_stages["base"][0].value[0]
    assert "slim" in base


def test_api_image_never_installs_torch_and_worker_image_does() -> None:
    all_stages = stages()
    api_runs = " ".join(" ".join(c.value) for s in ancestry("api", all_stages) for c in all_stages[s]
                        if c.cmd in ("RUN", "COPY"))
    assert "requirements-api.txt" in api_runs
    assert not re.search(r"torch|requirements-worker", api_runs.replace("find_spec('torch')", ""))
    worker_runs = " ".join(" ".join(c.value) for s in ancestry("worker", all_stages) for c in all_stages[s]
                           if c.cmd == "RUN")
    assert '--index-url "$TORCH_INDEX_URL" -r /tmp/req/torch.txt' in worker_runs
    assert "g++" in worker_runs  # torch.compile's CPU backend compiles C++
    args = {c.value[0].split("=")[0]: c.value[0] for s in ancestry("worker", all_stages)
            for c in all_stages[s] if c.cmd == "ARG"}
    assert args["TORCH_INDEX_URL"].endswith("download.pytorch.org/whl/cpu")


def test_requirement_split_keeps_pyproject_the_single_source(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(ROOT / "docker" / "requirements.py"), str(ROOT / "pyproject.toml"),
                    "--out", str(tmp_path)], check=True)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    read = {name: (tmp_path / name).read_text().splitlines() for name in
            ("requirements-api.txt", "requirements-worker.txt", "torch.txt")}
    assert [reqsplit.distribution(r) for r in read["torch.txt"]] == ["torch"]
    assert sorted(read["requirements-worker.txt"] + read["torch.txt"]) == sorted(deps)
    api = {reqsplit.distribution(r) for r in read["requirements-api.txt"]}
    assert api.isdisjoint(reqsplit.TRAINING_STACK)
    assert {"fastapi", "uvicorn", "sqlalchemy", "alembic", "celery", "boto3"} <= api


def _closure(requirements: list[str]) -> set[str]:
    """Distributions a pip install of these requirements brings, read from the installed metadata."""
    todo = [reqsplit.distribution(r) for r in requirements]
    extras = {reqsplit.distribution(r): set(re.findall(r"\[([^\]]+)\]", r)[0].split(",")) if "[" in r else set()
              for r in requirements}
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue  # not installed here: a platform-specific dependency
        for req in requires:
            marker = req.split(";", 1)[1] if ";" in req else ""
            wanted = re.findall(r'extra\s*==\s*"([^"]+)"', marker)
            if wanted and not set(wanted) & extras.get(name, set()):
                continue
            todo.append(reqsplit.distribution(req))
    return seen


def test_api_process_runs_on_the_api_images_dependencies() -> None:
    """Import the API, the CLI and the broker client with the training stack unimportable, serve /health,
    and check every third-party module it loaded comes with requirements-api.txt."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    api_requirements = reqsplit.split(deps)["requirements-api.txt"]
    script = f"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in {sorted(TRAINING_IMPORTS)!r}:
            raise ImportError("not in the API image: " + name)
sys.meta_path.insert(0, Block())
import app.main, app.cli, app.migrate, worker.celery_app, worker.tasks
from fastapi.testclient import TestClient
assert TestClient(app.main.create_app()).get("/health").json() == {{"status": "ok"}}
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env={"PATH": "/usr/bin:/bin", "FINETUNE_HOME": "/tmp/finetune-api-import-check"})
    assert result.returncode == 0, result.stderr[-3000:]
    modules = json.loads(result.stdout.strip().splitlines()[-1])
    provided = _closure(api_requirements)
    owners = md.packages_distributions()
    missing = {}
    for module in modules:
        for dist in owners.get(module, []):
            name = reqsplit.normalize(dist)
            if name not in provided and name not in ("finetune-service", "pip", "setuptools"):
                missing[module] = name
    # testclient's httpx is in the runtime deps; anything else loaded must come with the API's requirements
    assert not missing, f"the API imports modules its image does not install: {missing}"


def _dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex += "(?:.*/)?"
                i += 3
            elif pattern.startswith("**", i):
                regex += ".*"
                i += 2
            elif pattern[i] == "*":
                regex += "[^/]*"
                i += 1
            elif pattern[i] == "?":
                regex += "[^/]"
                i += 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                regex += pattern[i : end + 1]
                i = end + 1
            else:
                regex += re.escape(pattern[i])
                i += 1
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


def test_dockerignore_keeps_tests_environments_data_caches_and_secrets_out() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for path in ["tests/conftest.py", ".venv/bin/python", ".git/HEAD", ".finetune/finetune.db", ".env",
                 "app/__pycache__/main.cpython-311.pyc", "worker/training/__pycache__/x.pyc", "app/.env",
                 ".pytest_cache/v/x", "bench/scaling.py", "docs/deploy.md", "finetune_service.egg-info/PKG-INFO",
                 "docker-compose.yml", ".env.example", "app/.finetune/x"]:
        assert _dockerignore_excludes(path, patterns), f"{path} would enter the image"
    tracked = subprocess.run(["git", "ls-files", "app", "worker", "alembic", "docker"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.split()
    needed = ["pyproject.toml", "README.md", "alembic.ini", "docker/requirements.py", *tracked]
    assert "app/main.py" in needed and any(p.startswith("alembic/versions/") for p in needed)
    for path in needed:
        assert not _dockerignore_excludes(path, patterns), f"{path} is needed in the image"
