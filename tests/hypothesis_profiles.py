"""Hypothesis profiles (loaded by tests/conftest.py): "ci" runs every property test at its full example count,
"dev" at a quarter of it (at least 10) for the edit-test loop. HYPOTHESIS_PROFILE=ci|dev chooses; without it,
CI=true means "ci", anything else "dev". A test with its own count says it through `examples(full)`."""
import os

from hypothesis import settings

FULL = 100  # Hypothesis's own default count: what a test without `max_examples` runs in CI
settings.register_profile("ci", max_examples=FULL)
settings.register_profile("dev", max_examples=FULL // 4)


def chosen() -> str:
    profile = os.environ.get("HYPOTHESIS_PROFILE")
    if profile:
        return profile
    return "ci" if os.environ.get("CI") == "true" else "dev"


def load() -> None:
    settings.load_profile(chosen())


def examples(full: int) -> int:
    """A test's example count under the loaded profile: `full` in "ci", a quarter (at least 10) in "dev"."""
    return full if settings().max_examples >= FULL else max(10, full * settings().max_examples // FULL)
