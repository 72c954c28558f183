"""`monitor offline ...`: validate a model before launch, size and analyse its A/B test.

Registered on the main command as a Typer sub-app; heavy modules load inside each command.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from monitor.contract.errors import MonitorError

offline = typer.Typer(help="Before launch: baselines and validation, A/B test analysis, sample size.",
                      no_args_is_help=True)

DataOption = Annotated[Path, typer.Option("--data", help="The joined table (.parquet or .csv) of "
                                          "`monitor replay --joined`.")]
OutOption = Annotated[Optional[Path], typer.Option(  # noqa: UP045
    "--out", help="Directory for the HTML report and the JSON with every number.")]


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg="red", err=True)
    raise typer.Exit(2)


def _write(out: Path, name: str, result: dict[str, Any], html: str) -> None:
    import orjson

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_bytes(orjson.dumps(_json_safe(result), option=orjson.OPT_INDENT_2))
    (out / f"{name}.html").write_text(html)
    typer.echo(f"wrote {out / (name + '.html')} and {out / (name + '.json')}", err=True)


def _json_safe(found: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers."""
    if isinstance(found, dict):
        return {k: _json_safe(v) for k, v in found.items()}
    if isinstance(found, (list, tuple)):
        return [_json_safe(v) for v in found]
    if isinstance(found, float) and not math.isfinite(found):
        return None
    return found


@offline.command()
def validate(
    spec: Annotated[Path, typer.Option("--spec", help="Decision spec (TOML): threshold and value matrix.")],
    data: DataOption,
    out: OutOption = None,
    train_share: Annotated[float, typer.Option(
        min=0.05, max=0.95, help="The earliest share of decisions trains the baselines; the rest tests all.")] = 0.7,
    resamples: Annotated[int, typer.Option(min=50, help="Bootstrap resamples of every interval.")] = 200,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and of the baselines.")] = 0,
) -> None:
    """Compare the model's scores with baselines on many metrics, with confidence intervals and plots."""
    from monitor.contract import spec as specs
    from monitor.offline import table
    from monitor.offline.validate import validate as validating
    from monitor.offline.validate import verdict_lines

    try:
        loaded = specs.load(spec)
        result = validating(loaded, table.read(data), train_share, resamples, seed)
    except MonitorError as exc:
        _fail(exc)
    for line in verdict_lines(result):
        typer.echo(line)
    if out is not None:
        from monitor.offline.validate_report import render

        _write(out, "validate", result, render(result))


@offline.command()
def abtest(
    data: DataOption,
    variant_field: Annotated[str, typer.Option("--variant-field", help="Column naming each unit's arm.")] = "variant",
    control: Annotated[str, typer.Option("--control", help="The control arm's value.")] = "control",
    kpi: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--kpi", help="KPI to analyse (a kpi.<name> column, or any numeric column); repeat for several; "
        "every kpi.* column if unset.")] = None,
    covariate: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--covariate", help="Pre-period column for CUPED variance reduction.")] = None,
    treatment: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--treatment", help="The arm to compare with the control, when there are several.")] = None,
    split: Annotated[Optional[list[str]], typer.Option(  # noqa: UP045
        "--split", help="Planned share of an arm, ARM=SHARE, once per arm (e.g. control=0.9 and treatment=0.1), "
        "for the sample-ratio test; an equal split of the arms seen if unset.")] = None,
    out: OutOption = None,
    resamples: Annotated[int, typer.Option(min=100, help="Bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
) -> None:
    """Analyse an A/B test: per-arm KPIs, lift, Welch, z, Mann–Whitney, bootstrap, SRM, CUPED, sequential."""
    from monitor.offline import table
    from monitor.offline.abtest import analyse, summary_lines

    try:
        result = analyse(table.read(data), variant_field, control, kpi, covariate, treatment, resamples, seed,
                         _shares(split))
    except MonitorError as exc:
        _fail(exc)
    for line, loud in summary_lines(result):
        typer.secho(line, fg="red" if loud else None, bold=loud, err=loud)
    if out is not None:
        from monitor.offline.abtest_report import render

        _write(out, "abtest", result, render(result))


@offline.command()
def power(
    baseline_rate: Annotated[float, typer.Option("--baseline-rate", help="The control's rate, e.g. 0.12.")],
    mde: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--mde", help="Minimum detectable effect, relative: 0.05 is +5%.")] = None,
    mde_abs: Annotated[Optional[float], typer.Option(  # noqa: UP045
        "--mde-abs", help="Minimum detectable effect, absolute: 0.01 is one point.")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Chance to detect the effect if it is real.")] = 0.8,
    traffic: Annotated[Optional[str], typer.Option(  # noqa: UP045
        "--traffic", help="Units a day over both arms, e.g. 20000 or 20000/day: adds the runtime.")] = None,
    json: Annotated[bool, typer.Option("--json", help='Print {"n_per_arm": ..., "days": ...}.')] = False,
) -> None:
    """Sample size per arm of a two-sided test on a rate, and the days it takes at your traffic."""
    from monitor.offline.power import plan

    try:
        found = plan(baseline_rate, mde, mde_abs, alpha, power, _per_day(traffic))
    except MonitorError as exc:
        _fail(exc)
    if json:
        import orjson

        typer.echo(orjson.dumps({"n_per_arm": found["n_per_arm"], "days": found["days"]}).decode())
        return
    n = int(found["n_per_arm"] or 0)
    typer.echo(f"{found['baseline_rate']:.4g} → {found['treated_rate']:.4g}: {n:,} units per arm "
               f"({2 * n:,} in all) for a two-sided test at α = {alpha:g} with power {power:g}")
    if found["days"] is not None:
        typer.echo(f"at {_per_day(traffic):,.0f} units a day: {found['days']:.1f} days")


def _shares(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    found: dict[str, float] = {}
    for item in items:
        arm, _, share = item.partition("=")
        try:
            value = float(share)
        except ValueError:
            value = -1.0
        if not arm or value <= 0:
            raise typer.BadParameter(f"{item!r} is not ARM=SHARE with a positive share, e.g. treatment=0.1",
                                     param_hint="--split")
        found[arm] = value
    return found


def _per_day(text: str | None) -> float | None:
    if text is None:
        return None
    number = text.strip().removesuffix("/day").strip()
    try:
        return float(number)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a number of units a day such as 20000 or 20000/day",
                                 param_hint="--traffic") from None
