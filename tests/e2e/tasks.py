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


# Seconds on one core of the CI machine, roughly: ~1 s and ~10 s.
ONE_SECOND_MC = monte_carlo(150_000)
LONG_MC = monte_carlo(1_500_000)
# The largest run accepted, without antithetic pairs (twice the draws): far past the e2e
# stack's 15 s soft limit even on a fast core.
ENDLESS_MC = {**monte_carlo(10_000_000), "antithetic": False}
