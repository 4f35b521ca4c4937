"""Task templates the end-to-end tests submit: quick ones and calibrated long ones."""

from typing import Any

LOAN: dict[str, Any] = {"principal": 10000, "annual_rate": 0.05, "years": 30}
QUICK_LOAN: dict[str, Any] = {"principal": 1000, "annual_rate": 0.05, "years": 1}


def monte_carlo(paths: int, steps: int = 252, seed: int = 7) -> dict[str, Any]:
    """A European call by simulation: run time grows linearly with paths x steps, and the
    engine reports progress and checks for cancels after every chunk."""
    return {
        "spot": 100,
        "strike": 100,
        "maturity": 1,
        "rate": 0.03,
        "volatility": 0.2,
        "option_type": "call",
        "style": "asian_arithmetic",
        "paths": paths,
        "steps": steps,
        "seed": seed,
    }


# Seconds on one idle core of the development machine: ~0.4 s and ~8 s. A faster machine
# halves them, so LONG_MC still spans a few worker heartbeats (2 s) there.
ONE_SECOND_MC = monte_carlo(150_000)
LONG_MC = monte_carlo(3_000_000)
# The largest run accepted, without antithetic pairs (twice the draws): far past the e2e
# stack's 15 s soft limit even on a fast core. For a test that must find a task still running
# whenever it looks, and ends it by a cancel.
ENDLESS_MC = {**monte_carlo(10_000_000), "antithetic": False}
