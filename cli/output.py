"""What the commands print: tables on stdout, `error:` lines on stderr (exit code 2)."""

from collections.abc import Mapping, Sequence
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console()


def fail(*problems: str) -> NoReturn:
    """Report bad input, one `error:` line per problem, and exit with code 2."""
    errors = Console(stderr=True, soft_wrap=True)
    for problem in problems:
        errors.print(f"[bold red]error:[/] {escape(problem)}", highlight=False)
    raise typer.Exit(code=2)


def table(title: str, rows: Mapping[str, object]) -> Table:
    """A two-column table of named values; integers with thousands separators."""
    result = Table(title=title, show_header=False)
    for key, value in rows.items():
        result.add_row(key, f"{value:,}" if isinstance(value, int) else str(value))
    return result


def metrics_table(title: str, rows: Mapping[str, Mapping[str, float]],
                  columns: tuple[str, ...]) -> Table:
    """One row per method (name -> its metrics), four decimals."""
    result = Table(title=title)
    result.add_column("method")
    for column in columns:
        result.add_column(column, justify="right")
    for name, metrics in rows.items():
        result.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
    return result


def demand_table(title: str, rows: Mapping[str, Mapping[str, float]]) -> Table:
    """WAPE and MAE per method."""
    result = Table(title=title)
    for column in ("method", "WAPE", "MAE"):
        result.add_column(column, justify="left" if column == "method" else "right")
    for name, values in rows.items():
        result.add_row(name, f"{values['wape']:.4f}", f"{values['mae']:.3f}")
    return result


def records_table(title: str, records: Sequence[Mapping[str, object]],
                  columns: Sequence[str]) -> Table:
    """One row per record, the given columns; floats with four decimals."""
    result = Table(title=title)
    for column in columns:
        result.add_column(column, justify="left" if column == "family" else "right")
    for record in records:
        result.add_row(*(f"{record[c]:.4f}" if isinstance(record[c], float) else str(record[c])
                         for c in columns))
    return result


def print_promotion(promoted: bool, reason: str) -> None:
    out.print(f"{'promoted to champion' if promoted else 'not promoted'}: {reason}")
