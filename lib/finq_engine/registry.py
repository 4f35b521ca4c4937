"""The single source of truth for task types: name, parameter model, runner and example.

The API validates `params` with `TaskType.params_model`, publishes `json_schema()` at
`/api/v1/task-types`, and the worker runs `TaskType.execute` on the stored params.

A type that computes on uploaded data declares it with `upload` (an `UploadInput`): which
parameter holds the upload's id and what the parameters must satisfy given the table's shape.
The engine stays pure: the worker loads the table (checking that the upload belongs to the
task's owner) and passes it to `execute`; the API runs the same `check` at submission.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from finq_engine import (
    american,
    amortization,
    black_scholes,
    bonds,
    cash_flows,
    dated_bonds,
    implied_vol,
    monte_carlo,
    portfolio_analytics,
    var,
)
from finq_engine.context import RunContext
from finq_engine.errors import CalculationError
from finq_engine.jsonsafe import to_json
from finq_engine.prices import PriceTable


@dataclass(frozen=True)
class UploadInput:
    """How a task type consumes an uploaded price table."""

    # The parameter that holds the upload's id.
    param: str
    # (parsed params, number of assets in the upload) -> [(field, problem)], empty when fine.
    check: Callable[[Any, int], list[tuple[str, str]]]


@dataclass(frozen=True)
class TaskType:
    name: str
    title: str
    params_model: type[BaseModel]
    # run(params, ctx), or run(params, ctx, table) for a type with `upload`.
    run: Callable[..., Mapping[str, Any]]
    example: dict[str, Any]
    upload: UploadInput | None = None

    def parse(self, params: Mapping[str, Any]) -> BaseModel:
        """Validate raw params; raises pydantic.ValidationError with field paths."""
        return self.params_model.model_validate(params)

    def upload_id(self, params: Mapping[str, Any]) -> str | None:
        """The id of the upload these (validated) params refer to, if the type takes one."""
        if self.upload is None:
            return None
        value = params.get(self.upload.param)
        return str(value) if value is not None else None

    def execute(
        self,
        params: Mapping[str, Any],
        ctx: RunContext,
        table: PriceTable | None = None,
        keep_arrays: bool = False,
    ) -> dict[str, Any]:
        """Validate again (the worker trusts nothing it did not check) and compute; the result
        as plain lists, or with its float arrays left as NumPy arrays (`keep_arrays`, see
        `to_json`) for an encoder that writes them directly."""
        parsed = self.parse(params)
        if self.upload is None:
            raw = self.run(parsed, ctx)
        else:
            if table is None:
                raise CalculationError(f"{self.name} needs the data of its upload")
            raw = self.run(parsed, ctx, table)
        result: dict[str, Any] = to_json(dict(raw), keep_arrays)
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
            name="implied_volatility",
            title="Implied volatility from option prices (calls and puts)",
            params_model=implied_vol.ImpliedVolParams,
            run=implied_vol.implied_vol,
            example={
                "price": [12.1, 7.9, 4.6, 6.2, 0.01],
                "spot": 100,
                "strike": [90, 100, 110, 100, 90],
                "maturity": 0.5,
                "rate": 0.04,
                "dividend_yield": 0.01,
                "option_type": ["call", "call", "call", "put", "call"],
            },
        ),
        TaskType(
            name="american_option",
            title="American options: binomial tree or Longstaff-Schwartz Monte Carlo",
            params_model=american.AmericanOptionParams,
            run=american.american_option,
            example={
                "spot": 100,
                "strike": 100,
                "maturity": 1,
                "rate": 0.05,
                "volatility": 0.2,
                "dividend_yield": 0.0,
                "option_type": "put",
                "exercise": "american",
                "method": "binomial",
                "steps": 2000,
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
        TaskType(
            name="dated_bond_analytics",
            title="Bonds with dates and day counts: clean/dirty price, accrued, yield, duration",
            params_model=dated_bonds.DatedBondParams,
            run=dated_bonds.dated_bonds,
            example={
                "settlement": "2025-03-15",
                "maturity": "2035-08-15",
                "coupon_rate": 0.045,
                "frequency": 2,
                "day_count": "30/360 US",
                "face_value": 100,
                "price": 96.25,
            },
        ),
        TaskType(
            name="csv_portfolio_analytics",
            title="Portfolio analytics from uploaded daily prices (CSV)",
            params_model=portfolio_analytics.CsvPortfolioParams,
            run=portfolio_analytics.csv_portfolio_analytics,
            example={
                "upload_id": "00000000-0000-0000-0000-000000000000",
                "risk_free_rate": 0.02,
                "confidence": 0.95,
            },
            upload=UploadInput("upload_id", portfolio_analytics.check_against_upload),
        ),
    ]
    return {t.name: t for t in types}


TASK_TYPES: dict[str, TaskType] = _build()


def get_task_type(name: str) -> TaskType | None:
    return TASK_TYPES.get(name)
