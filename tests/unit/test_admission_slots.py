"""The admission slots a batch grows into (api.admission): whole-or-nothing, first come first
served, and no deadlock when two batches each hold a slot and want more."""

from __future__ import annotations

import asyncio

import pytest

from api.admission import Admission, Slots, Ticket
from api.errors import Overloaded
from core.settings import AdmissionSettings


async def test_slots_are_taken_whole_and_in_arrival_order():
    slots = Slots(4)
    assert slots.try_take(3)
    big = asyncio.create_task(slots.take(3))  # waits: only 1 free
    await asyncio.sleep(0)
    assert not slots.try_take(1), "a single slot overtook the batch waiting at the head"
    small = asyncio.create_task(slots.take(1))
    slots.give(3)
    await asyncio.wait_for(big, 5)
    await asyncio.wait_for(small, 5)
    assert slots.free == 0


async def test_a_waiter_that_gives_up_lets_the_next_one_in():
    slots = Slots(2)
    assert slots.try_take(2)
    big = asyncio.create_task(slots.take(2))
    small = asyncio.create_task(slots.take(1))
    await asyncio.sleep(0)
    slots.give(1)
    big.cancel()
    await asyncio.wait_for(small, 5)
    assert slots.free == 0


def _ticket(admission: Admission) -> Ticket:
    assert admission.slots.try_take(1)
    ticket = Ticket(admission)
    ticket.held = 1
    return ticket


async def test_two_growing_batches_do_not_deadlock():
    admission = Admission(None, AdmissionSettings(max_inflight=4, max_waiting=8, max_wait_s=5))
    a, b = _ticket(admission), _ticket(admission)
    grow_a = asyncio.create_task(a.grow(3))
    grow_b = asyncio.create_task(b.grow(3))
    done, _ = await asyncio.wait({grow_a, grow_b}, return_when=asyncio.FIRST_COMPLETED)
    first, second = (a, b) if grow_a in done else (b, a)
    assert first.held == 3
    admission.slots.give(first.held)  # the first batch finishes
    await asyncio.wait_for(asyncio.gather(grow_a, grow_b), 5)
    assert second.held == 3 and admission.slots.free == 1


async def test_a_batch_that_cannot_fit_is_refused_and_holds_nothing():
    admission = Admission(None, AdmissionSettings(max_inflight=4, max_waiting=0))
    assert admission.slots.try_take(2)
    ticket = _ticket(admission)
    with pytest.raises(Overloaded):
        await ticket.grow(3)
    assert ticket.held == 0 and admission.slots.free == 2


async def test_a_batch_larger_than_the_worker_takes_all_of_it():
    admission = Admission(None, AdmissionSettings(max_inflight=4, max_waiting=0))
    assert await _ticket(admission).grow(16) == 4 and admission.slots.free == 0
