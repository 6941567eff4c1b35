"""The markdown summary printed after a run: what was measured, medians and ratios, targets."""

from __future__ import annotations

from typing import Any


def markdown_summary(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        f"## Parley benchmarks ({results['sizes']['scale']}, {results['started']})",
        "",
        f"{machine['cpus']} CPUs ({machine['cpu_model']}), {machine['memory_gib']} GiB, "
        f"Python {machine['python']}, database {results['database']}, "
        f"{results['seconds']:.0f} s in all.",
        "",
    ]
    if "turns" in results:
        lines += _turns(results["turns"])
    if "history" in results:
        lines += _history(results["history"])
    if "scale" in results:
        lines += _scale(results["scale"])
    if "streaming" in results:
        lines += _streaming(results["streaming"])
    return "\n".join(lines)


def _streaming(s: dict[str, Any]) -> list[str]:
    overhead = s["first_delta_overhead_p50_ms"]
    lines = [
        "### Streaming",
        "",
        f"Time to first delta, p50 / p95 ms (model `{s['model']}`): through Parley "
        f"{_p(s['first_delta_parley'])}, the openai client straight from the model "
        f"{_p(s['first_token_model'])}; Parley adds {overhead} ms at p50 "
        f"(goal ≤ 50: {_met(overhead <= 50)}).",
        "",
        "| reply words | delta events | history events | history bytes |",
        "|---|---|---|---|",
    ]
    for h in s["history_per_turn"].values():
        lines.append(
            f"| {h['reply_words']} | {h['delta_events']} | {h['history_events']} "
            f"| {h['history_bytes']} |"
        )
    c = s["concurrent"]
    lines += [
        "",
        f"{c['sessions']} sessions streaming at once (`{c['model']}`): first delta "
        f"{_p(c['first_delta'])} ms, all done in {c['all_done_seconds']} s, "
        f"{c['failed']} failed; errors {s['errors'] or 'none'}.",
        "",
    ]
    return lines


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _p(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.1f} / {summary['p95_ms']:.1f}"


def _turns(t: dict[str, Any]) -> list[str]:
    slow = t["slow_model"]
    cpu = t.get("cpu_ms_per_turn", {})
    rows = [
        ("Parley turn (API message → reply, model `echo`)", t["parley_turn"], "parley"),
        ("floor: bare Update → one activity calling the model", t["floor_turn"], "floor"),
        ("floor: bare Update → one empty activity", t["floor_turn_noop_activity"], "floor_noop"),
        ("floor: bare Update → one local activity", t["floor_turn_local_activity"], "floor_local"),
        ("anchor: Signal + Query polled every 50 ms", t["anchor_turn"], None),
        ("Parley open (update-with-start)", t["parley_open"], None),
        ("floor open: bare update-with-start → empty activity", t["floor_open"], None),
        (f"Parley turn, model answering in {slow['model_ms']} ms", slow["parley_turn"], None),
        (f"floor turn, model answering in {slow['model_ms']} ms", slow["floor_turn"], None),
    ]
    lines = [
        "### Turn overhead and anchor",
        "",
        "| what | n | p50 / p95 ms | CPU ms per turn (Temporal + worker + API) |",
        "|---|---|---|---|",
    ]
    for name, summary, key in rows:
        spent = cpu.get(key, {}) if key else {}
        cost = (
            f"{spent.get('temporal', 0):.1f} + "
            f"{spent.get('worker', 0) + spent.get('bare', 0):.1f} + {spent.get('api', 0):.1f}"
            if spent
            else ""
        )
        lines.append(f"| {name} | {summary['n']} | {_p(summary)} | {cost} |")
    lines += [
        "",
        f"- Parley / floor at p50: **{t['ratio_p50']}x** (p95 {t['ratio_p95']}x); target ≤ 1.5x: "
        f"{_met(t['ratio_p50'] <= 1.5)}.",
        f"- anchor / Parley at p50: **{t['anchor_over_parley_p50']}x**; target ≥ 3x: "
        f"{_met(t['anchor_over_parley_p50'] >= 3)} (the floor itself is "
        f"{t['anchor_turn']['p50_ms'] / t['floor_turn']['p50_ms']:.2f}x faster than the anchor).",
        f"- errors: {t['errors'] or 'none'}",
        "",
    ]
    return lines


def _history(h: dict[str, Any]) -> list[str]:
    early, late = h["per_turn_early"], h["per_turn_late"]
    runs = ", ".join(f"{r['events']} events / {r['bytes'] // 1024} KiB" for r in h["runs"])
    return [
        "### History growth",
        "",
        f"- One session, {h['turns']} sequential turns, PARLEY_TURNS_PER_RUN={h['turns_per_run']}: "
        f"{len(h['runs'])} runs ({runs}).",
        f"- Per turn, turns {early['turns']}: {early['events']} events, "
        f"{early['bytes']:.0f} bytes; turns {late['turns']}: {late['events']} events, "
        f"{late['bytes']:.0f} bytes. "
        f"Ratio **{h['bytes_ratio']}** (events {h['events_ratio']}); target ≤ 1.2: "
        f"{_met(h['bytes_ratio'] <= 1.2)}.",
        f"- Client-visible errors: **{h['client_visible_errors']}** "
        f"({_met(h['client_visible_errors'] == 0)}); transcript read back complete: "
        f"{h['transcript_complete']}.",
        f"- Turn latency p50 / p95 ms: first 100 turns {_p(h['turn_latency_first_100'])}, "
        f"last 100 {_p(h['turn_latency_last_100'])}; max {h['turn_latency']['max_ms']:.0f}.",
        "",
    ]


def _scale(s: dict[str, Any]) -> list[str]:
    idle_cpu = s["idle_cpu_percent_of_one_core"]
    parley, floor, cold = s["parley"], s["floor"], s["evicted_first_message"]
    rss = s["worker_rss_idle"]["rss_mib"]
    rate = parley["turns_per_second"] or 0

    def cpu(found: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in found["cpu_percent_of_one_core"].items())

    return [
        "### Scale",
        "",
        f"- Opened {s['idle_sessions_opened']} of {s['idle_sessions_requested']} sessions "
        f"({s['open_concurrency']} at a time) in {s['open_seconds']} s "
        f"({s['opens_per_second']}/s; latency p50 / p95 {_p(s['open_latency'])} ms; "
        f"errors {s['open_errors'] or 'none'}).",
        f"- Worker RSS with them idle: **{rss:.0f} MiB** (fresh worker "
        f"{s['worker_rss_fresh']['rss_mib']:.0f} MiB; PARLEY_MAX_CACHED_WORKFLOWS="
        f"{s['max_cached_workflows']}); target ≤ 500 MB: {_met(rss * 1.048576 <= 500)}.",
        "- CPU while idle, % of one core: "
        + ", ".join(f"{name} {value}" for name, value in idle_cpu.items())
        + ".",
        f"- {cold['sessions']} evicted sessions each send a message at once (each replays "
        f"first): all answered in {cold['all_answered_seconds']} s, latency p50 / p95 "
        f"{_p(cold['latency'])} ms, errors {cold['errors']}.",
        f"- {s['active_sessions']} sessions in a closed loop for {s['load_seconds']} s: "
        f"**{rate} turns/s** sustained after {s['load_warmup_seconds']} s warm-up, turn latency "
        f"p50 / p95 {_p(parley['turn_latency'])} ms, errors {parley['errors'] or 'none'}; "
        f"target ≥ 100 turns/s: {_met(rate >= 100)}. CPU, % of one core: {cpu(parley)}.",
        f"- The floor under the same load ({s['active_sessions']} bare workflows, Update → one "
        f"activity calling the model): **{floor['turns_per_second']} turns/s**, latency p50 / "
        f"p95 {_p(floor['turn_latency'])} ms, errors {floor['errors'] or 'none'}. CPU: "
        f"{cpu(floor)}. Parley / floor throughput: {s['parley_over_floor_turns_per_second']}.",
        f"- Worker RSS after the load: {s['worker_rss_after_load']['rss_mib']:.0f} MiB.",
        "",
    ]
