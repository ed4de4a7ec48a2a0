"""Side-by-side steering against one plain generation, on the embedded model + default atlas.

Times (median of `--repeats`, interleaved) greedy generation of `--tokens` new tokens:
- plain: one unsteered row (batch 1, no hooks), with our few-rows linear path and, as
  `plain_torch_linear`, with the model's own linear layers; the faster one is the baseline;
- side by side: the unsteered and the steered row in one batch of 2 (what the app runs);
- steered alone: one steered row (batch 1, hooks in place);
- hooked_zero: the same hooks at strength 0 (the plain run's tokens, so only the hook's cost
  differs).
side_by_side_ratio = side by side / plain (target <= 1.3);
hook_overhead_ms = steered alone - plain, per generated token (median decoding steps);
first_token_ms = the Steering tab's streamed endpoint, from the call to its first update
(the first token of both texts); streamed_over_whole = its last update / the same request
answered whole.
Run under the shared lock: `flock /tmp/bench.lock .venv/bin/python bench/steering.py`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sae_core.atlas.layout import DEFAULT_ATLAS
from sae_core.norms import typical_norms
from sae_core.steer.edits import FeatureSteer, Steering, steering_hooks
from sae_core.steer.generation import GenConfig, generate, prompt_ids
from ui.serving import session


def run_all(lm, saes, norms, ids, runs: dict, gen: GenConfig, repeats: int):
    """(outputs, wall times, prefill times, decoding step times) of each run, `repeats`
    rounds interleaved so that load changes hit every run alike."""
    times: dict[str, list[float]] = {k: [] for k in runs}
    prefill: dict[str, list[float]] = {k: [] for k in runs}
    steps: dict[str, list[float]] = {k: [] for k in runs}
    outs = {}
    for _ in range(repeats):
        for name, (rows, few_rows) in runs.items():
            stamps = [time.perf_counter()]
            outs[name] = generate(lm, saes, norms, ids, rows, gen, few_rows_linear=few_rows,
                                  on_step=lambda _logits, st=stamps: st.append(
                                      time.perf_counter()))
            times[name].append(time.perf_counter() - stamps[0])
            prefill[name].append(stamps[1] - stamps[0])
            steps[name] += [b - a for a, b in pairwise(stamps[1:])]
    return outs, times, prefill, steps


def hook_call_us(lm, saes, norms, steer: Steering, hookpoint: str, prompt_len: int) -> float:
    """The edit itself, timed apart from the model: one decoding step's call on 1 row."""
    x = torch.randn(1, 1, lm.d_model) * norms[hookpoint] / lm.d_model ** 0.5
    with steering_hooks(lm, saes, norms, [steer], prompt_len=prompt_len) as cursor:
        cursor.offset = prompt_len
        hook = next(iter(lm.module_for(hookpoint)._forward_hooks.values()))
        t0 = time.perf_counter()
        for _ in range(1000):
            hook(None, None, (x,))
        per_call_us = (time.perf_counter() - t0) * 1000
    print(f"hook call alone: {per_call_us:.1f} us per step (add mode, 1 row)")
    return per_call_us


def first_streamed(args, hookpoint: str, feature: str, strength: str
                   ) -> tuple[float, float, float]:
    """Medians, in ms, of the Steering tab's streamed endpoint (ui/steering/write): from the
    call to its first update (the page's first tokens) and to its last (the whole texts),
    and of the same request answered whole (`run_steering`, the baseline), interleaved. The
    baseline runs in a worker thread, as Gradio runs every callback: on this CPU small
    matmuls are ~1.5x slower off the main thread, and the streamed work runs in one."""
    from concurrent.futures import ThreadPoolExecutor

    from ui.steering.write import run_steering, stream_steering

    worker = ThreadPoolExecutor(1)

    inputs = (args.atlas, args.prompt, int(hookpoint.split(".")[1]), int(feature),
              float(strength), "add", "all", "", args.tokens, 0, 0)
    first, last, whole = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        updates = stream_steering(*inputs)
        next(updates)
        first.append(1000 * (time.perf_counter() - t0))
        for _ in updates:
            pass
        last.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        worker.submit(run_steering, *inputs).result()
        whole.append(1000 * (time.perf_counter() - t0))
    return statistics.median(first), statistics.median(last), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atlas", default=str(DEFAULT_ATLAS))
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt", default="Write a short story about a long trip.")
    parser.add_argument("--feature", default="layers.13:90:0.5",
                        help="hookpoint:feature:strength")
    args = parser.parse_args()
    loaded = session.open_atlas(args.atlas)
    lm, saes = loaded.lm, loaded.saes
    hookpoint, feature, strength = args.feature.split(":")
    steer = Steering((FeatureSteer(hookpoint, int(feature), float(strength)),))
    gen = GenConfig(max_new_tokens=args.tokens)
    ids = prompt_ids(lm, args.prompt, gen)
    norms, _ = typical_norms(lm, saes, [hookpoint])
    zero = Steering((FeatureSteer(hookpoint, int(feature), 0.0),))
    runs = {"plain": ([None], True), "plain_torch_linear": ([None], False),
            "side_by_side": ([None, steer], True), "steered_alone": ([steer], True),
            "hooked_zero": ([zero], True)}
    print(f"torch threads {torch.get_num_threads()}, prompt {len(ids)} tokens, "
          f"{args.tokens} new tokens, greedy, steering {args.feature}")
    generate(lm, saes, norms, ids, [None, steer], GenConfig(max_new_tokens=4))  # warm-up
    outs, times, prefill, steps = run_all(lm, saes, norms, ids, runs, gen, args.repeats)
    lengths = {name: [len(o) for o in out] for name, out in outs.items()}
    print(f"new tokens per row: {lengths}")
    if any(n != args.tokens for ls in lengths.values() for n in ls):
        print("warning: a row stopped early, so runs differ in length; change --prompt")
    same_plain = outs["side_by_side"][0] == outs["plain"][0]
    same_steered = outs["side_by_side"][1] == outs["steered_alone"][0]
    print(f"batched rows equal their solo runs: unsteered {same_plain}, steered {same_steered}")
    for label, new in zip(("unsteered", "steered"), outs["side_by_side"], strict=True):
        print(f"{label}: {lm.tokenizer.decode(new)!r}")
    hook_call_us(lm, saes, norms, steer, hookpoint, len(ids))
    # Other jobs share the 2 cores and stall some runs for seconds, so besides wall-clock
    # medians we use a robust time: median prefill + (tokens - 1) x median decoding step
    # (the median over all steps of all runs ignores the stalled ones).
    med = {name: statistics.median(t) for name, t in times.items()}
    step = {name: statistics.median(t) for name, t in steps.items()}
    robust = {name: statistics.median(prefill[name]) + (args.tokens - 1) * step[name]
              for name in runs}
    for name, t in times.items():
        print(f"{name:18s} robust {robust[name]:.3f} s (step {1000 * step[name]:.1f} ms, "
              f"prefill {1000 * statistics.median(prefill[name]):.0f} ms); wall-clock median "
              f"{med[name]:.3f} s, runs {', '.join(f'{x:.2f}' for x in t)}")
    # The baseline is the faster of the two plain runs (with or without the W @ x.T path).
    ratio = robust["side_by_side"] / min(robust["plain"], robust["plain_torch_linear"])
    wall = med["side_by_side"] / min(med["plain"], med["plain_torch_linear"])
    overhead = 1000 * (step["steered_alone"] - step["plain"])
    zero_ms = 1000 * (step["hooked_zero"] - step["plain"])
    print(f"side by side / plain, wall-clock medians: {wall:.3f}")
    print(f"hook overhead with strength 0 (same tokens as plain): {zero_ms:.3f} ms a token")
    first_ms, last_ms, whole_ms = first_streamed(args, hookpoint, feature, strength)
    print(f"streamed (the tab's endpoint): first update after {first_ms:.0f} ms, the whole "
          f"texts after {last_ms:.0f} ms; answered whole: {whole_ms:.0f} ms (medians of "
          f"{args.repeats})")
    print(f"RESULT side_by_side_ratio={ratio:.3f} hook_overhead_ms={overhead:.3f} "
          f"first_token_ms={first_ms:.0f} streamed_over_whole={last_ms / whole_ms:.3f}")


if __name__ == "__main__":
    main()
