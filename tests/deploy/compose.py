"""Read docker-compose.yml the way `docker compose` does, for tests that cannot run an engine.

Variables come from an env file (.env.example here), `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}` and `$$` are interpolated, YAML anchors and merge keys are resolved, and override files are
merged over the base (mappings deeply, lists appended). Enough of the specification for this project's files.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
_VAR = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")
_BRACED = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>.*))?$", re.S)


class InterpolationError(ValueError):
    pass


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; comments and blank lines skipped; surrounding quotes removed."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def interpolate(text: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("plain"):
            return env.get(match.group("plain"), "")
        parts = _BRACED.match(match.group("braced"))
        if not parts:
            raise InterpolationError(f"invalid interpolation {match.group(0)!r}")
        name, op, arg = parts.group("name"), parts.group("op"), parts.group("arg")
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return interpolate(arg, env) if missing else value  # type: ignore[return-value]
        if op in (":?", "?"):
            if missing:
                raise InterpolationError(f"required variable {name} is missing: {arg}")
            return value  # type: ignore[return-value]
        return value or ""

    return _VAR.sub(replace, text)


def _interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(x, env) for x in node]
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    return node


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    if isinstance(base, list) and isinstance(override, list):
        return base + [x for x in override if x not in base]
    return override


def load_compose(*files: str, env: dict[str, str]) -> dict[str, Any]:
    model: dict[str, Any] = {}
    for name in files or ("docker-compose.yml",):
        raw = yaml.safe_load((ROOT / name).read_text())
        model = _merge(model, _interpolate_tree(raw, env))
    return model


def active_services(model: dict[str, Any], profiles: set[str] = frozenset()) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in model["services"].items()
        if not svc.get("profiles") or set(svc["profiles"]) & set(profiles)
    }


def service_environment(service: dict[str, Any], dotenv: dict[str, str]) -> dict[str, str]:
    """What the container's environment gets from compose: env_file entries, then `environment` (which wins)."""
    env: dict[str, str] = {}
    files = service.get("env_file") or []
    for entry in [files] if isinstance(files, (str, dict)) else files:
        path = entry if isinstance(entry, str) else entry["path"]
        if path == ".env":  # the deployment's .env: in tests, the given values
            env.update(dotenv)
        elif (ROOT / path).is_file():
            env.update(read_env_file(ROOT / path))
        elif isinstance(entry, str) or entry.get("required", True):
            raise FileNotFoundError(path)
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) if "=" in item else (item, "") for item in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


def service_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command")
    if command is None:
        raise ValueError("service has no command (the image default would run)")
    return shlex.split(command) if isinstance(command, str) else [str(x) for x in command]
