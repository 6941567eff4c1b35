"""The markdown summary printed after a run: what was measured, medians and ratios, targets."""

from __future__ import annotations

from typing import Any

from bench.measure import ratio


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
    if "multiprocess" in results:
        lines += _multiprocess(results["multiprocess"])
    if "tools" in results:
        lines += _tools(results["tools"])
    return "\n".join(lines)


def _multiprocess(m: dict[str, Any]) -> list[str]:
    cross, one, two, kills = m["cross"], m["one_worker"], m["two_workers"], m["kills"]

    def load(name: str, found: dict[str, Any]) -> str:
        cpu = found["cpu_percent_of_one_core"]
        return (
            f"| {name} | {found['turns_per_second']} | {_p(found['turn_latency'])} "
            f"| {cpu.get('temporal', 0)} | {cpu.get('worker', 0)} + {cpu.get('worker-2', 0)} "
            f"| {cpu.get('api', 0)} + {cpu.get('api-2', 0)} "
            f"| {found['machine_busy_percent_of_one_core']} | {found['errors'] or 'none'} |"
        )

    errors = ", ".join(f"{n}x {kind}" for kind, n in kills["client_errors"].items()) or "none"
    return [
        "### More than one process (two workers, two APIs, one dev server, PostgreSQL)",
        "",
        f"- Opened through one API, talked to and read back through the other: "
        f"{cross['worked']}/{cross['sessions']} sessions worked "
        f"({_met(cross['worked'] == cross['sessions'])}); failures {cross['failures'] or 'none'}.",
        "",
        f"{m['sessions']} sessions in a closed loop for {m['load_seconds']} s, every request "
        "to the other API than the last; CPU in % of one core over the window "
        f"after {m['load_warmup_seconds']} s warm-up:",
        "",
        "| workers | turns/s | p50 / p95 ms | Temporal | worker(s) | APIs | machine busy "
        "| errors |",
        "|---|---|---|---|---|---|---|---|",
        load("1", one),
        load("2", two),
        "",
        f"- 2 workers / 1 worker turns/s: **{m['two_over_one_turns_per_second']}**.",
        f"- worker-2 and api-2 SIGKILLed {kills['killed_at_seconds']} s into the load and "
        f"restarted (polling again after {kills['restart_seconds']} s): "
        f"{kills['turns_in_transcripts']}/{kills['turns_asked']} turns asked are in the "
        f"transcripts, lost **{kills['lost_turns']}**, duplicated messages "
        f"**{kills['duplicated_messages']}** "
        f"({_met(kills['lost_turns'] == 0 and kills['duplicated_messages'] == 0)}); "
        f"{kills['turns_per_second']} turns/s; {kills['turns_re_asked']} turns re-asked with "
        f"the same Idempotency-Key after client errors ({errors}).",
        "",
    ]


def _streaming(s: dict[str, Any]) -> list[str]:
    overhead = s["first_delta_overhead_p50_ms"]
    widget = s["first_delta_widget_overhead_p50_ms"]
    lines = [
        "### Streaming",
        "",
        f"Time to first delta, p50 / p95 ms (model `{s['model']}`): the openai client straight "
        f"from the model {_p(s['first_token_model'])}; through Parley's API "
        f"{_p(s['first_delta_parley'])}, **+{overhead} ms** at p50 (target ≤ +50: "
        f"{_met(overhead <= 50)}); through the widget's route {_p(s['first_delta_widget'])}, "
        f"**+{widget} ms** (target ≤ +50: {_met(widget <= 50)}).",
        "",
        "| reply words | delta events | history events | history bytes |",
        "|---|---|---|---|",
    ]
    for h in s["history_per_turn"].values():
        lines.append(
            f"| {h['reply_words']} | {h['delta_events']} | {h['history_events']} "
            f"| {h['history_bytes']} |"
        )
    c, f = s["concurrent"], s["followed"]
    lost = (
        f["lost_events"]
        + f["duplicated_events"]
        + f["clients_out_of_order"]
        + f["clients_without_session_final"]
    )
    lines += [
        "",
        f"- {c['sessions']} sessions streaming at once (`{c['model']}`): first delta "
        f"{_p(c['first_delta'])} ms, all done in {c['all_done_seconds']} s, "
        f"{c['failed']} failed; errors {s['errors'] or 'none'}.",
        f"- **{f['clients']} live clients** on {f['sessions']} sessions "
        f"({f['clients'] // f['sessions']} each, GET /chats/{{id}}/stream), "
        f"{f['turns_per_session']} streamed turns a session, then its end: "
        f"{f['events_delivered']} events delivered in "
        f"{f['seconds']} s ({f['events_per_session']['p50']:.0f} per session); lost "
        f"**{f['lost_events']}**, repeated {f['duplicated_events']}, clients out of order "
        f"{f['clients_out_of_order']}, streams not ended by session.final "
        f"{f['clients_without_session_final']} (target: none: {_met(lost == 0)}); errors "
        f"{f['errors'] or 'none'}.",
        "",
    ]
    return lines


def _tools(t: dict[str, Any]) -> list[str]:
    return [
        f"### Tool calls (stdio MCP `{t['server']}`, kept warm by the worker)",
        "",
        "| p50 / p95 ms | |",
        "|---|---|",
        f"| turn calling one tool (two model calls) | {_p(t['tool_turn'])} |",
        f"| same turn, no tool | {_p(t['plain_turn'])} |",
        f"| the tool called directly, warm MCP SDK session | {_p(t['direct_warm_call'])} |",
        f"| turn calling one tool, a server started per call | "
        f"{_p(t['tool_turn_server_per_call'])} |",
        f"| cold: server started, asked once | {_p(t['cold_spawn_to_answer'])} |",
        f"| cold, until it has stopped | {_p(t['cold_spawn_with_stop'])} |",
        "",
        f"Tool-call overhead = (tool turn - plain turn) - direct call: "
        f"{t['tool_call_overhead_p50_ms']} ms at p50 ({t['tool_call_overhead_p95_ms']} ms from "
        f"the p95s). First open of the agent (discovery starts the server) "
        f"{t['first_open_with_discovery_ms']} ms, its first tool turn {t['first_tool_turn_ms']} "
        f"ms; errors {t['errors'] or 'none'}.",
        "",
        "Inside the tool turns, by the server's event times (p50 ms): "
        + "; ".join(
            f"`{name}` waits {_p50(times['waiting'])}, runs {_p50(times['running'])}"
            for name, times in t["tool_turn_activities"].items()
        )
        + ".",
        "",
    ]


def _p50(summary: dict[str, Any]) -> str:
    return f"{summary['p50_ms']:.1f}"


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
    open_ratio = ratio(t["parley_open"]["p50_ms"], t["floor_open"]["p50_ms"])
    lines += [
        "",
        f"- Parley / floor turn at p50: **{t['ratio_p50']}x** (target ≤ 1.2x: "
        f"{_met(t['ratio_p50'] <= 1.2)}); at p95: **{t['ratio_p95']}x** (target ≤ 1.3x: "
        f"{_met(t['ratio_p95'] <= 1.3)}).",
        f"- Parley / floor open at p50: **{open_ratio}x** (target ≤ 1.2x: "
        f"{_met(open_ratio <= 1.2)}).",
        f"- anchor / Parley at p50: {t['anchor_over_parley_p50']}x (the floor itself is "
        f"{t['anchor_turn']['p50_ms'] / t['floor_turn']['p50_ms']:.2f}x faster than the anchor).",
        f"- errors: {t['errors'] or 'none'}",
        "",
    ]
    if "breakdown_ms" in t:
        lines += _breakdown(t["breakdown_ms"])
    return lines


_PHASE_NAMES = {
    "to_server": "request → workflow task scheduled (HTTP, auth, session lookup, update RPC)",
    "first_task": "first workflow task (accept the update, schedule the model call)",
    "activity_queue": "activity task to the worker",
    "activity": "the activity (transcript read, stream writes, model call)",
    "last_task": "last workflow task (take the reply, record the turn's messages)",
    "to_client": "update completed → reply received (server, API response)",
}


def _breakdown(b: dict[str, Any]) -> list[str]:
    parley, floor = b["parley"], b["floor"]
    lines = [
        f"Where a turn's milliseconds go (medians over {parley['turns']} Parley and "
        f"{floor['turns']} floor turns, from the client's clock and the history's event times):",
        "",
        "| phase | Parley ms | floor ms | Parley - floor |",
        "|---|---|---|---|",
    ]
    for phase, name in _PHASE_NAMES.items():
        lines.append(
            f"| {name} | {parley[phase]:.1f} | {floor[phase]:.1f} | "
            f"{parley[phase] - floor[phase]:+.1f} |"
        )
    total_p = sum(parley[phase] for phase in _PHASE_NAMES)
    total_f = sum(floor[phase] for phase in _PHASE_NAMES)
    lines += [f"| sum of medians | {total_p:.1f} | {total_f:.1f} | {total_p - total_f:+.1f} |", ""]
    return lines


def _history(h: dict[str, Any]) -> list[str]:
    early, late = h["per_turn_early"], h["per_turn_late"]
    runs = ", ".join(f"{r['events']} events / {r['bytes'] // 1024} KiB" for r in h["runs"])
    overall = h["per_turn_overall"]
    under = h["max_run_events"] < 51_200 and h["max_run_bytes"] < 50 * 1024 * 1024
    return [
        "### History growth",
        "",
        f"- One session, {h['turns']} sequential turns ({h['tool_turns']} calling a webhook "
        f"tool, {h['tool_calls_received']} calls received, "
        f"{h['tool_calls_answered_in_transcript']} answered in the transcript; "
        f"{h['streamed_turns']} streamed over "
        f"SSE), PARLEY_TURNS_PER_RUN={h['turns_per_run']}: {len(h['runs'])} runs, "
        f"{h['continue_as_new_count']} continue-as-new ({runs}).",
        f"- Largest run: **{h['max_run_events']} events, {h['max_run_bytes'] / 1024:.0f} KiB** "
        f"(limits 51,200 events / 50 MB: {_met(under)}); per turn overall "
        f"{overall['events']} events, {overall['bytes']:.0f} bytes (the costliest turn "
        f"{h['per_turn_max']['events']} events, {h['per_turn_max']['bytes']} bytes).",
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
    sms = s["idle_sms_sessions"]
    rss = s["worker_rss_idle"]["rss_mib"]
    parley_cpu = parley.get("cpu_ms_per_turn", {})
    floor_cpu = floor.get("cpu_ms_per_turn", {})
    ours = parley_cpu.get("worker", 0) + parley_cpu.get("api", 0)
    bare = floor_cpu.get("bare", 0)
    cpu_ratio = ratio(ours, bare)
    idle_ours = idle_cpu.get("worker", 0) + idle_cpu.get("api", 0)
    throughput = s["parley_over_floor_turns_per_second"] or 0

    def cpu(found: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in found["cpu_percent_of_one_core"].items())

    return [
        "### Scale",
        "",
        f"- {sms['texted']} of {sms['requested']} SMS sessions opened by a text each "
        f"({s['open_concurrency']} webhooks at a time) in {sms['texted_seconds']} s (webhook "
        f"p50 / p95 {_p(sms['webhook_latency'])} ms, errors {sms['webhook_errors'] or 'none'}); "
        f"{sms['answered']} replies texted and recorded after {sms['all_answered_seconds']} s.",
        f"- {s['web_sessions_opened']} web sessions opened besides ({s['opens_per_second']}/s; "
        f"p50 / p95 {_p(s['open_latency'])} ms; errors {s['open_errors'] or 'none'}).",
        f"- Worker RSS with all of them idle: **{rss:.0f} MiB** (fresh worker "
        f"{s['worker_rss_fresh']['rss_mib']:.0f} MiB; PARLEY_MAX_CACHED_WORKFLOWS="
        f"{s['max_cached_workflows']}); target ≤ 400 MiB: {_met(rss <= 400)}.",
        f"- CPU while idle, % of one core: worker + API **{idle_ours:.1f}** (target ≤ 1: "
        f"{_met(idle_ours <= 1)}); "
        + ", ".join(f"{name} {value}" for name, value in idle_cpu.items())
        + ".",
        f"- {cold['sessions']} evicted sessions each send a message at once (each replays "
        f"first): all answered in {cold['all_answered_seconds']} s, latency p50 / p95 "
        f"{_p(cold['latency'])} ms, errors {cold['errors']}.",
        f"- {s['active_sessions']} sessions in a closed loop for {s['load_seconds']} s: "
        f"**{parley['turns_per_second']} turns/s** sustained after {s['load_warmup_seconds']} s "
        f"warm-up, turn latency p50 / p95 {_p(parley['turn_latency'])} ms, errors "
        f"{parley['errors'] or 'none'}. CPU, % of one core: {cpu(parley)}.",
        f"- The floor under the same load ({s['active_sessions']} bare workflows, Update → one "
        f"activity calling the model): **{floor['turns_per_second']} turns/s**, latency p50 / "
        f"p95 {_p(floor['turn_latency'])} ms, errors {floor['errors'] or 'none'}. CPU: "
        f"{cpu(floor)}.",
        f"- Parley / floor throughput: **{throughput}** (target ≥ 0.8: "
        f"{_met(throughput >= 0.8)}). CPU per turn, API + worker: **{ours:.1f} ms** against "
        f"the bare worker's {bare:.1f} ms: **{cpu_ratio}x** (target ≤ 1.3x: "
        f"{_met(cpu_ratio <= 1.3)}); Temporal's per turn {parley_cpu.get('temporal', 0):.1f} "
        f"vs {floor_cpu.get('temporal', 0):.1f} ms.",
        f"- Worker RSS after the load: {s['worker_rss_after_load']['rss_mib']:.0f} MiB.",
        "",
    ]
