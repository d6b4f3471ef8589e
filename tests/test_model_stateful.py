"""A stateful property test: random sequences of allocation and administration against a Python model.

The model of one counter is its current value and {value: state} of the numbers issued from it. The next
automatic value is the first value above the counter that holds no number; an override above the counter
moves it there; set_counter puts it anywhere in range; void and void-and-replace change states. After every
step the database must agree with the model exactly, validate() must report nothing for these counters but
the counter_below_ledger a backward set_counter leaves, and no number may ever have been handed out twice.

Every example runs in the test's one database with its own two fresh document types (GLOBAL and PROJECT), so
examples cannot see each other.
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any, ClassVar

import psycopg
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from admin_helpers import force_expiry, override, set_counter, validate, void, void_and_replace
from helpers import cancel, confirm, define, expect_error, expire_reservations, next_number, reserve

Conn = psycopg.Connection[Any]

# Small values so that overrides, voids and counter moves keep meeting the numbers already issued.
VALUES = st.integers(min_value=1, max_value=24)
COUNTER_VALUES = st.integers(min_value=0, max_value=24)
IN_USE = ("confirmed", "overridden")  # the states void accepts (imported is not produced here)


@dataclass
class CounterModel:
    document_type: str
    scope: str | None  # None for the GLOBAL type
    value: int = 0
    numbers: dict[int, str] = field(default_factory=dict)  # sequence value -> state

    def render(self, value: int) -> str:
        if self.scope is None:
            return f"{self.document_type}-{value:03d}"
        return f"{self.scope}/{self.document_type}/{value:03d}"

    def next_free(self) -> int:
        value = self.value + 1
        while value in self.numbers:
            value += 1
        return value

    def below_ledger(self) -> bool:
        return bool(self.numbers) and max(self.numbers) > self.value


class LedgerModel(RuleBasedStateMachine):
    dsn: ClassVar[str] = ""
    examples: ClassVar[itertools.count[int]] = itertools.count(1)

    def __init__(self) -> None:
        super().__init__()
        self.conn: Conn = psycopg.connect(self.dsn, autocommit=True)
        example = next(self.examples)
        self.counters = [CounterModel(f"SG{example:04d}", None), CounterModel(f"SP{example:04d}", "P1")]
        define(self.conn, self.counters[0].document_type, "{TYPE}-{SEQ:3}", allow_manual_override=True)
        define(
            self.conn,
            self.counters[1].document_type,
            "{SCOPE}/{TYPE}/{SEQ:3}",
            scope="PROJECT",
            allow_manual_override=True,
        )
        self.reserved: dict[uuid.UUID, tuple[int, int]] = {}  # live reservations -> (counter, value)
        self.finished: dict[uuid.UUID, tuple[int, int]] = {}  # confirmed, cancelled or expired ones
        self.handed_out: list[str] = []  # every number a call issued, in order

    def teardown(self) -> None:
        self.conn.close()

    def scope_argument(self, counter: CounterModel) -> dict[str, str]:
        return {} if counter.scope is None else {"scope": counter.scope}

    def issue(self, counter: CounterModel, number: str, state: str) -> int:
        """Record in the model that the next free value became `number`; returns that value."""
        value = counter.next_free()
        assert number == counter.render(value)
        counter.numbers[value] = state
        counter.value = value
        self.handed_out.append(number)
        return value

    # --- allocation -------------------------------------------------------------------------------

    @rule(which=st.sampled_from([0, 1]), reserve_first=st.booleans())
    def allocate(self, which: int, reserve_first: bool) -> None:
        counter = self.counters[which]
        if not reserve_first:
            number = next_number(self.conn, counter.document_type, **self.scope_argument(counter))
            self.issue(counter, number, "confirmed")
            return
        reservation = reserve(self.conn, counter.document_type, **self.scope_argument(counter))
        value = self.issue(counter, reservation["document_number"], "reserved")
        assert reservation["sequence_value"] == value
        self.reserved[reservation["token"]] = (which, value)

    @precondition(lambda self: self.reserved)
    @rule(data=st.data(), outcome=st.sampled_from(["confirmed", "cancelled", "expired"]))
    def end_reservation(self, data: st.DataObject, outcome: str) -> None:
        token = data.draw(st.sampled_from(sorted(self.reserved)))
        which, value = self.reserved.pop(token)
        number = self.counters[which].render(value)
        if outcome == "confirmed":
            assert confirm(self.conn, token, document_ref=f"doc {value}") == number
        elif outcome == "cancelled":
            assert cancel(self.conn, token, reason="changed my mind") == number
        else:
            force_expiry(self.conn, token)
            assert expire_reservations(self.conn) == 1
        self.counters[which].numbers[value] = outcome
        self.finished[token] = (which, value)

    @precondition(lambda self: self.finished)
    @rule(data=st.data())
    def confirm_again(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(sorted(self.finished)))
        which, value = self.finished[token]
        counter = self.counters[which]
        if counter.numbers[value] == "confirmed":
            assert confirm(self.conn, token) == counter.render(value)  # repeating a confirm is harmless
        else:
            expect_error("NB004", lambda: confirm(self.conn, token))

    # --- administration ---------------------------------------------------------------------------

    @rule(which=st.sampled_from([0, 1]), value=VALUES)
    def override_value(self, which: int, value: int) -> None:
        counter = self.counters[which]
        number = counter.render(value)
        if value in counter.numbers:
            expect_error("NB005", lambda: override(self.conn, counter.document_type, number))
            return
        assert override(self.conn, counter.document_type, number, reason="model override") == number
        counter.numbers[value] = "overridden"
        counter.value = max(counter.value, value)
        self.handed_out.append(number)

    @rule(which=st.sampled_from([0, 1]), data=st.data(), replace=st.booleans())
    def void_value(self, which: int, data: st.DataObject, replace: bool) -> None:
        counter = self.counters[which]
        # A number that was issued (in any state), or the next one, which never was.
        value = data.draw(st.sampled_from([*sorted(counter.numbers), counter.next_free()]))
        number = counter.render(value)
        action = void_and_replace if replace else void
        state = counter.numbers.get(value)
        if state is None:
            expect_error("NB011", lambda: action(self.conn, number))
            return
        if state not in IN_USE:
            expect_error("NB009", lambda: action(self.conn, number))
            return
        result = action(self.conn, number, reason="model void")
        counter.numbers[value] = "voided"
        if replace:
            self.issue(counter, result, "confirmed")
        else:
            assert result == number

    @rule(which=st.sampled_from([0, 1]), value=COUNTER_VALUES)
    def move_counter(self, which: int, value: int) -> None:
        counter = self.counters[which]
        assert (
            set_counter(
                self.conn, counter.document_type, value, reason="model move", **self.scope_argument(counter)
            )
            == value
        )
        counter.value = value

    # --- what must hold after every step ----------------------------------------------------------

    @invariant()
    def ledger_matches_the_model(self) -> None:
        codes = [counter.document_type for counter in self.counters]
        rows = self.conn.execute(
            "SELECT c.document_type, l.sequence_value, l.state, l.document_number"
            "  FROM docnum.ledger l JOIN docnum.counter c USING (counter_id)"
            " WHERE c.document_type = ANY (%s)",
            (codes,),
        ).fetchall()
        in_database = {(code, value): (state, number) for code, value, state, number in rows}
        in_model = {
            (counter.document_type, value): (state, counter.render(value))
            for counter in self.counters
            for value, state in counter.numbers.items()
        }
        assert in_database == in_model

    @invariant()
    def counters_match_the_model(self) -> None:
        codes = [counter.document_type for counter in self.counters]
        rows = self.conn.execute(
            "SELECT document_type, scope_value, current_value FROM docnum.counter"
            " WHERE document_type = ANY (%s)",
            (codes,),
        ).fetchall()
        in_database = {code: (scope, value) for code, scope, value in rows}
        for counter in self.counters:
            scope, value = in_database.get(counter.document_type, (counter.scope or "", 0))
            assert (scope, value) == (counter.scope or "", counter.value), counter.document_type

    @invariant()
    def validate_reports_only_the_expected_findings(self) -> None:
        found = set()
        for row in validate(self.conn):
            for counter in self.counters:
                if counter.document_type in row["detail"]:
                    found.add((row["check_name"], row["severity"], counter.document_type))
        expected = {
            ("counter_below_ledger", "error", counter.document_type)
            for counter in self.counters
            if counter.below_ledger()
        }
        assert found == expected

    @invariant()
    def no_number_was_handed_out_twice(self) -> None:
        assert len(set(self.handed_out)) == len(self.handed_out)


def test_ledger_follows_the_model(dsn: str) -> None:
    LedgerModel.dsn = dsn
    run_state_machine_as_test(
        LedgerModel,
        settings=settings(
            max_examples=25,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
