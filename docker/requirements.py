"""Write the images' requirement files from pyproject.toml, the one list of dependencies.

    python docker/requirements.py pyproject.toml --out DIR

- requirements-api.txt: everything the API needs; the training stack (torch and the libraries built on it)
  is left out, since the API process never imports torch.
- requirements-worker.txt: every runtime dependency except torch itself.
- torch.txt: the torch pin, installed first from the index the build chose (CPU or CUDA wheels).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

# Only the worker trains: these are the training core's libraries (distribution names, normalized).
TRAINING_STACK = frozenset({"torch", "transformers", "peft", "accelerate", "scikit-learn"})


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def distribution(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"cannot read a package name in {requirement!r}")
    return normalize(match.group(1))


def split(dependencies: list[str]) -> dict[str, list[str]]:
    return {
        "requirements-api.txt": [r for r in dependencies if distribution(r) not in TRAINING_STACK],
        "requirements-worker.txt": [r for r in dependencies if distribution(r) != "torch"],
        "torch.txt": [r for r in dependencies if distribution(r) == "torch"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    dependencies = tomllib.loads(args.pyproject.read_text())["project"]["dependencies"]
    files = split(dependencies)
    if not files["torch.txt"]:
        raise SystemExit("pyproject.toml lists no torch dependency")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (args.out / name).write_text("".join(f"{line}\n" for line in lines))


if __name__ == "__main__":
    main()
