"""The recorded transcripts a worker keeps between turns: extended where they end, cut back
for a turn that began before the last messages were recorded, never replaced by less."""

from __future__ import annotations

from datetime import UTC, datetime

from src.activities.recorded_transcripts import EMPTY, RecordedTranscripts, to_wire_messages
from src.domain import Message, ToolCall, Usage

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _user(text: str) -> Message:
    return Message(role="user", content=text, time=NOW)


def _reply(text: str, *calls: ToolCall) -> Message:
    usage = Usage(model="m", prompt_tokens=3, completion_tokens=2)
    return Message(role="assistant", content=text, tool_calls=list(calls), time=NOW, usage=usage)


def test_recording_extends_the_kept_copy_where_it_ends() -> None:
    kept = RecordedTranscripts()
    first = [_user("hi"), _reply("hello")]
    kept.keep("s", EMPTY.extended(first))
    kept.recorded("s", 2, [_user("again"), _reply("yes")])

    transcript = kept.get("s")
    assert transcript is not None and transcript.count == 4
    assert [m["content"] for m in transcript.wire] == ["hi", "hello", "again", "yes"]
    assert len(transcript.usages) == 2


def test_messages_recorded_past_a_gap_or_again_change_nothing() -> None:
    kept = RecordedTranscripts()
    kept.keep("s", EMPTY.extended([_user("hi"), _reply("hello")]))
    kept.recorded("s", 3, [_user("after a gap")])  # seq 2 was recorded elsewhere
    kept.recorded("s", 0, [_user("hi")])  # a retried write of what it holds
    kept.recorded("unknown", 0, [_user("no copy kept")])

    transcript = kept.get("s")
    assert transcript is not None and transcript.count == 2
    assert kept.get("unknown") is None


def test_a_prefix_is_the_transcript_as_it_was() -> None:
    call = ToolCall(id="c1", name="lookup", arguments="{}", response="42")
    full = EMPTY.extended([_user("hi"), _reply("", call), _reply("done"), _user("more")])
    cut = full.prefix(2)

    assert cut.count == 2
    assert cut.wire == to_wire_messages([_user("hi"), _reply("", call)])
    assert cut.wire_from(1) == cut.wire[1:]  # the tool call, then its result
    assert len(cut.usages) == 1
    assert full.prefix(9) is full


def test_a_shorter_copy_does_not_replace_a_longer_one() -> None:
    kept = RecordedTranscripts()
    longer = EMPTY.extended([_user("hi"), _reply("hello")])
    kept.keep("s", longer)
    kept.keep("s", longer.prefix(1))
    assert kept.get("s") is longer
