"""The sealed `state` of stateless conversations: what opens, and every way a state that
cannot be trusted is refused (tampered, truncated, foreign, expired, finished)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from src.errors import BadState, Conflict
from src.sealing.state_envelope import (
    StateKey,
    StateRejected,
    StateSealer,
    dev_keys,
    new_key_setting,
    parse_keys,
)
from src.services.text_chat import ConversationState, open_conversation_state

K1 = parse_keys(new_key_setting("k1"))[0]
K2 = parse_keys(new_key_setting("k2"))[0]
PAYLOAD: dict[str, Any] = {"turn": 3, "account_id": "acct-1", "note": "naïve ☃"}
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MAX_AGE = 3600.0


def body_bytes(state: str) -> bytes:
    body = state.split(".", 2)[2]
    return base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))


def with_body(state: str, raw: bytes) -> str:
    version, key_id, _ = state.split(".", 2)
    return f"{version}.{key_id}.{base64.urlsafe_b64encode(raw).decode().rstrip('=')}"


def conversation(**changes: Any) -> dict[str, Any]:
    state = ConversationState(
        account_id="acct-1",
        call_id="call-1",
        correlation_id="corr-1",
        snapshot_id="snap-1",
        turn=1,
        seen=2,
        digest="d" * 64,
        finished=False,
        issued_time=NOW - timedelta(minutes=5),
    )
    return state.model_copy(update=changes).model_dump(mode="json")


def open_for_account(sealed: str, account_id: str = "acct-1") -> ConversationState:
    return open_conversation_state(
        StateSealer([K1]), sealed, account_id=account_id, max_age_seconds=MAX_AGE, now=NOW
    )


def test_a_sealed_state_opens_to_what_was_sealed() -> None:
    sealer = StateSealer([K1])

    assert sealer.open(sealer.seal(PAYLOAD)) == PAYLOAD


def test_a_state_names_its_version_and_key_and_hides_the_payload() -> None:
    state = StateSealer([K1]).seal(PAYLOAD)

    assert state.startswith("v1.k1.")
    assert "acct-1" not in state
    assert b"acct-1" not in body_bytes(state)


def test_sealing_twice_gives_two_different_states() -> None:
    sealer = StateSealer([K1])

    assert sealer.seal(PAYLOAD) != sealer.seal(PAYLOAD)


def test_after_a_rotation_the_new_key_seals_and_the_old_one_still_opens() -> None:
    old_state = StateSealer([K1]).seal(PAYLOAD)
    rotated = StateSealer([K2, K1])

    assert rotated.open(old_state) == PAYLOAD
    assert rotated.seal(PAYLOAD).startswith("v1.k2.")


@pytest.mark.parametrize("position", [0, 11, 12, 20, -17, -1])
def test_a_state_with_one_flipped_bit_is_refused(position: int) -> None:
    # positions: the nonce, the ciphertext, the tag
    sealer = StateSealer([K1])
    raw = bytearray(body_bytes(sealer.seal(PAYLOAD)))
    raw[position] ^= 0x01

    with pytest.raises(StateRejected, match="altered or truncated"):
        sealer.open(with_body(sealer.seal(PAYLOAD), bytes(raw)))


def test_a_state_sealed_with_a_key_this_server_does_not_have_is_refused() -> None:
    foreign = StateSealer([K2]).seal(PAYLOAD)

    with pytest.raises(StateRejected, match="a key this server does not have"):
        StateSealer([K1]).open(foreign)


def test_a_state_relabelled_with_another_known_key_id_is_refused() -> None:
    # Same secret under two ids: only the associated data (version + key id) tells them apart.
    twin = StateKey("k9", K1.secret)
    sealer = StateSealer([K1, twin])
    relabelled = sealer.seal(PAYLOAD).replace("v1.k1.", "v1.k9.", 1)

    with pytest.raises(StateRejected, match="altered or truncated"):
        sealer.open(relabelled)


@pytest.mark.parametrize("keep", [1, 12, 28])  # 28: a nonce and a tag, no ciphertext
def test_a_truncated_state_is_refused(keep: int) -> None:
    sealer = StateSealer([K1])
    state = sealer.seal(PAYLOAD)

    with pytest.raises(StateRejected, match=r"^the state is truncated$"):
        sealer.open(with_body(state, body_bytes(state)[:keep]))


def test_a_state_cut_short_in_its_ciphertext_is_refused() -> None:
    sealer = StateSealer([K1])
    state = sealer.seal(PAYLOAD)

    with pytest.raises(StateRejected, match="altered or truncated"):
        sealer.open(with_body(state, body_bytes(state)[:-1]))


@pytest.mark.parametrize(
    "text", ["", "hello", "v1", "v1.k1", "v1.k1.", "v2.k1.AAAA", ".k1.AAAA", "v1..AAAA"]
)
def test_what_is_not_a_state_at_all_is_refused(text: str) -> None:
    with pytest.raises(StateRejected, match="not a Parley conversation state"):
        StateSealer([K1]).open(text)


def test_a_state_that_is_not_base64_is_refused() -> None:
    with pytest.raises(StateRejected, match="not valid base64"):
        StateSealer([K1]).open("v1.k1.A")


def test_a_sealed_value_that_is_not_an_object_is_refused() -> None:
    sealer = StateSealer([K1])

    with pytest.raises(StateRejected, match="not a Parley conversation state"):
        sealer.open(sealer.seal([1, 2]))  # type: ignore[arg-type]


def test_key_settings_list_ids_and_32_byte_keys_and_the_first_seals() -> None:
    setting = f" {new_key_setting('a1')} ,, {new_key_setting('b2')} "

    keys = parse_keys(setting)

    assert [key.key_id for key in keys] == ["a1", "b2"]
    assert all(len(key.secret) == 32 for key in keys)
    assert StateSealer(keys).seal(PAYLOAD).startswith("v1.a1.")


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("k1:A", "not base64"),
        (f"k1:{base64.urlsafe_b64encode(bytes(16)).decode()}", "32 bytes"),
        (f"k-1:{base64.urlsafe_b64encode(bytes(32)).decode()}", "alphanumeric id"),
        (f":{base64.urlsafe_b64encode(bytes(32)).decode()}", "alphanumeric id"),
        ("k1", "32 bytes"),
    ],
)
def test_a_bad_key_setting_is_refused_naming_the_key(setting: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_keys(setting)


def test_a_sealer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="at least one"):
        StateSealer([])


def test_the_dev_key_is_made_once_and_kept_private(tmp_path: Path) -> None:
    first = dev_keys(tmp_path)
    second = dev_keys(tmp_path)

    assert first == second
    assert (tmp_path / "state-keys").stat().st_mode & 0o777 == 0o600


def test_a_fresh_state_of_this_account_continues_its_conversation() -> None:
    state = open_for_account(StateSealer([K1]).seal(conversation()))

    assert (state.call_id, state.turn, state.seen) == ("call-1", 1, 2)


def test_a_state_of_another_account_is_refused() -> None:
    sealed = StateSealer([K1]).seal(conversation())

    with pytest.raises(BadState, match="belongs to another account"):
        open_for_account(sealed, account_id="acct-2")


def test_a_state_issued_longer_ago_than_the_maximum_age_has_expired() -> None:
    sealed = StateSealer([K1]).seal(conversation(issued_time=NOW - timedelta(seconds=3601)))

    with pytest.raises(BadState, match="the state expired: it was issued more than 3600 s ago"):
        open_for_account(sealed)


def test_a_state_exactly_the_maximum_age_old_still_opens() -> None:
    sealed = StateSealer([K1]).seal(conversation(issued_time=NOW - timedelta(seconds=3600)))

    assert open_for_account(sealed).call_id == "call-1"


def test_a_state_with_no_issue_time_counts_as_expired() -> None:
    sealed = StateSealer([K1]).seal(conversation(issued_time=None))

    with pytest.raises(BadState, match="expired"):
        open_for_account(sealed)


def test_a_finished_conversations_state_is_a_conflict() -> None:
    sealed = StateSealer([K1]).seal(conversation(finished=True))

    with pytest.raises(Conflict, match="the conversation is finished"):
        open_for_account(sealed)


def test_a_tampered_state_is_a_bad_state_saying_why() -> None:
    sealed = StateSealer([K1]).seal(conversation())

    with pytest.raises(BadState, match="invalid state: the state was altered or truncated"):
        open_for_account(sealed[:-2] + ("AA" if sealed[-2:] != "AA" else "BB"))


def test_a_genuine_state_that_is_not_a_conversation_is_a_bad_state() -> None:
    sealed = StateSealer([K1]).seal({"hello": "world"})

    with pytest.raises(BadState, match="invalid state: not a Parley conversation state"):
        open_for_account(sealed)
