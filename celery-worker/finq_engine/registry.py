"""The single source of truth for task types: name, parameter model, runner and example.

The API validates `params` with `TaskType.params_model`, publishes `json_schema()` at
`/api/v1/task-types`, and the worker runs `TaskType.execute` on the stored params.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from finq_engine import amortization, black_scholes, bonds, cash_flows, monte_carlo, var
from finq_engine.context import RunContext
from finq_engine.jsonsafe import to_json


@dataclass(frozen=True)
class TaskType:
    name: str
    title: str
    params_model: type[BaseModel]
    run: Callable[[Any, RunContext], Mapping[str, Any]]
    example: dict[str, Any]
    # Rough cost bound used to reject absurd requests early (elements touched).
    tags: tuple[str, ...] = field(default=())

    def parse(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate raw params; raises pydantic.ValidationError with field paths."""
        return self.params_model.model_validate(params)

    def execute(self, params: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        """Validate again (the worker trusts nothing it did not check) and compute."""
        parsed = self.parse(params)
        result: dict[str, Any] = to_json(dict(self.run(parsed, ctx)))
        return result

    def json_schema(self) -> dict[str, Any]:
        return self.params_model.model_json_schema()


def _build() -> dict[str, TaskType]:
    types = [
        TaskType(
            name="loan_amortization",
            title="Loan amortization schedule",
            params_model=amortization.LoanAmortizationParams,
            run=amortization.loan_amortization,
            example={"principal": 10000, "annual_rate": 0.05, "years": 30},
        ),
        TaskType(
            name="black_scholes",
            title="Black-Scholes option prices and Greeks",
            params_model=black_scholes.BlackScholesParams,
            run=black_scholes.black_scholes,
            example={
                "spot": 100,
                "strike": [90, 95, 100, 105, 110],
                "maturity": 0.5,
                "rate": 0.04,
                "volatility": 0.22,
                "dividend_yield": 0.01,
                "option_type": "call",
            },
        ),
        TaskType(
            name="monte_carlo_option",
            title="Monte Carlo option pricing (European, Asian, barrier)",
            params_model=monte_carlo.MonteCarloOptionParams,
            run=monte_carlo.monte_carlo_option,
            example={
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.04,
                "volatility": 0.25,
                "option_type": "call",
                "style": "asian_arithmetic",
                "paths": 20000,
                "steps": 52,
                "seed": 42,
            },
        ),
        TaskType(
            name="portfolio_var",
            title="Portfolio Value-at-Risk and CVaR",
            params_model=var.PortfolioVarParams,
            run=var.portfolio_var,
            example={
                "weights": [0.5, 0.3, 0.2],
                "portfolio_value": 1000000,
                "confidence": 0.99,
                "horizon_days": 10,
                "method": "parametric",
                "expected_returns": [0.0004, 0.0003, 0.0001],
                "covariance": [
                    [0.000225, 0.0000675, 0.00001],
                    [0.0000675, 0.0001, 0.000006],
                    [0.00001, 0.000006, 0.000025],
                ],
            },
        ),
        TaskType(
            name="cash_flow_analysis",
            title="Cash flow NPV, IRR, MIRR and payback",
            params_model=cash_flows.CashFlowParams,
            run=cash_flows.cash_flow_analysis,
            example={
                "cash_flows": [-100000, 25000, 30000, 35000, 30000, 20000],
                "discount_rate": 0.08,
                "finance_rate": 0.06,
                "reinvest_rate": 0.07,
            },
        ),
        TaskType(
            name="bond_analytics",
            title="Bond price, yield, duration and convexity",
            params_model=bonds.BondParams,
            run=bonds.bond_analytics,
            example={
                "face_value": 1000,
                "coupon_rate": 0.045,
                "maturity": 10,
                "frequency": 2,
                "yield": 0.052,
            },
        ),
    ]
    return {t.name: t for t in types}


TASK_TYPES: dict[str, TaskType] = _build()


def get_task_type(name: str) -> TaskType | None:
    return TASK_TYPES.get(name)
