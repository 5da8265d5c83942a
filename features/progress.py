"""Progress display for long multi-stage jobs (rich), shared by every command."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def stages(names: list[str]) -> Iterator[Callable[[], None]]:
    """Show a bar over named stages; call the yielded function when each stage is done."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(names[0], total=len(names))
        done = 0

        def next_stage() -> None:
            nonlocal done
            done += 1
            label = names[done] if done < len(names) else "done"
            progress.update(task, completed=done, description=label)

        yield next_stage
