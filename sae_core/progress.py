"""Progress reports of long jobs (builds, indexes, Hub loads), for a console or the app."""

from __future__ import annotations

from collections.abc import Callable

from tqdm import tqdm

Report = Callable[..., None]
"""report(message, fraction_done, **stats): a tqdm bar here, the app's build worker
(sae_core/jobs) or gr.Progress there. Training adds `tokens` (LM tokens done) and
`mean_fvu`; a report may ignore them."""


def console_report() -> Report:
    """A tqdm bar that shows each message and the fraction done (in tenths of a percent)."""
    bar = tqdm(total=1000, unit="‰", bar_format="{l_bar}{bar}| {elapsed}<{remaining}")

    def report(message: str, fraction: float, **_stats) -> None:
        bar.update(round(fraction * 1000) - bar.n)
        bar.set_description(message)  # redraws the bar: message and fraction together

    return report
