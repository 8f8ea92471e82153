"""A burst of requests takes turns on the event loop instead of holding it (runtime/loop_slices.py).

Ordering, not timing, is asserted: the work each request does is real CPU (a busy loop), and what
is checked is whether a timer due during the burst fires before the burst is over, and in which
order the requests ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket

import pytest

from service.runtime.loop_slices import LoopSlicer
from service.runtime.settings import Settings
from service.web.app import create_app
from tests.support.api import Api
from tests.support.catalogs import load_catalog, put_recommender

pytestmark = pytest.mark.timing

WORK_SECONDS = 0.002  # what one warm 50-endpoint transform costs, about
BURST = 60


class WorkClock:
    """The slicer's clock in these tests: only the work they simulate (`busy`) advances it, so
    how many requests fit in a slice does not depend on how much of the machine the test gets."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


CLOCK = WorkClock()


def work_slicer(slice_seconds: float, shared_slice_seconds: float | None = None) -> LoopSlicer:
    return LoopSlicer(slice_seconds, shared_slice_seconds, clock=CLOCK)


def busy(seconds: float) -> None:
    """A request's work: `seconds` of the slicer's time."""
    CLOCK.now += seconds


async def run_burst(slicer: LoopSlicer, **turn: object) -> tuple[list[int], int]:
    """BURST requests ready at once (each asking `slicer.turn(**turn)`); returns their order and
    how many had run when a timer set at the start fired."""
    done: list[int] = []
    fired_after: list[int] = []
    loop = asyncio.get_running_loop()
    loop.call_later(0, lambda: fired_after.append(len(done)))

    async def request(number: int) -> None:
        waiter = slicer.turn(**turn)
        if waiter is not None:
            await waiter
        busy(WORK_SECONDS)
        done.append(number)

    await asyncio.gather(*(request(n) for n in range(BURST)))
    return done, fired_after[0]


async def test_a_timer_fires_between_turns_of_a_burst():
    order, fired_after = await run_burst(work_slicer(0.01))
    assert order == list(range(BURST))  # first come, first served
    assert fired_after < BURST // 2  # the burst did not hold the loop to its end


async def test_without_slices_the_burst_holds_the_loop():
    # What the slicer is for: with it off, the timer waits for the whole burst.
    order, fired_after = await run_burst(work_slicer(0))
    assert order == list(range(BURST)) and fired_after == BURST


async def test_a_tenant_that_sends_little_goes_ahead_of_a_flood_that_waits():
    """Lines per tenant: B's one request, arriving after A's ten, runs right after the one of
    A's that found the slice open, not behind the nine others."""
    slicer = work_slicer(0.001)
    order: list[str] = []

    async def request(tenant: str) -> None:
        waiter = slicer.turn(tenant)
        if waiter is not None:
            await waiter
        busy(WORK_SECONDS)  # the first one spends the slice: the others wait
        order.append(tenant)

    await asyncio.gather(*(request("a") for _ in range(10)), request("b"))
    assert order.index("b") == 1, order
    assert slicer.waiting == 0


async def test_a_tenant_without_a_line_goes_now_while_the_whole_slice_is_open():
    """A flood spent the shared slice and waits in its line; another tenant's request does not
    join a line behind it (one loop iteration less) while the iteration is within the whole
    slice. Past that, it waits too: many light tenants together cannot hold the loop."""
    slicer = work_slicer(0.05, 0.001)
    assert slicer.turn("a", contended=True) is None
    busy(0.002)
    flood = slicer.turn("a", contended=True)
    assert flood is not None  # the shared slice is spent: A waits in its line
    assert slicer.turn("b", contended=True) is None  # B has no line: it goes now
    busy(0.05)
    late = slicer.turn("c", contended=True)
    assert late is not None  # the whole slice is spent: C waits as well
    await asyncio.wait_for(asyncio.gather(flood, late), 5)
    assert slicer.waiting == 0


async def test_a_request_read_during_a_flood_runs_before_the_floods_next_turn():
    """Another tenant's bytes arrive on a socket while a flood takes its turns, one per loop
    iteration: they are read before the flood's next turn (while tenants contend, a turn runs in
    an iteration of its own, after the one that reads the sockets), and the request that reading
    them starts (a task, as aiohttp's) runs ahead of the flood's next turn, not behind it."""
    slicer = work_slicer(0.05, 0.0005)
    loop = asyncio.get_running_loop()
    order: list[str] = []
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    b_done = loop.create_future()
    started: list[asyncio.Task] = []

    async def flood(number: int) -> None:
        waiter = slicer.turn("a", contended=True)
        if waiter is not None:
            await waiter
        busy(WORK_SECONDS)
        order.append(f"a{number}")
        if number == 30:  # the batches have shrunk to one turn an iteration by then
            theirs.send(b"x")  # B's request arrives while the flood runs

    async def b_request() -> None:
        waiter = slicer.turn("b", contended=True)
        if waiter is not None:
            await waiter
        order.append("b")
        b_done.set_result(None)

    def readable() -> None:
        loop.remove_reader(ours.fileno())
        ours.recv(1)
        order.append("b read")
        started.append(loop.create_task(b_request()))  # what aiohttp does with a request

    loop.add_reader(ours.fileno(), readable)
    try:
        await asyncio.gather(*(flood(n) for n in range(40)))
        await asyncio.wait_for(b_done, 5)
    finally:
        loop.remove_reader(ours.fileno())
        ours.close()
        theirs.close()
    read = order.index("b read")
    # Read as soon as the flood's turn during which they came ends (no other turn first), and
    # run before the flood's next turn.
    assert order[read - 1] == "a30", order
    assert order[read + 1] == "b", order


async def test_while_tenants_contend_the_slice_is_the_shared_one():
    """With company, a flood runs about one request per loop iteration (the shared slice), so a
    timer due during it fires far sooner than with the tenant alone (the full slice)."""
    alone_order, alone_fired = await run_burst(work_slicer(0.05, 0.001), tenant="a")
    shared_order, shared_fired = await run_burst(work_slicer(0.05, 0.001), tenant="a",
                                                 contended=True)
    assert alone_order == shared_order == list(range(BURST))
    assert alone_fired >= 0.05 / WORK_SECONDS / 2  # the tenant alone: the slice's 25, about
    assert shared_fired <= 3


async def test_a_cancelled_waiter_gives_up_its_place():
    slicer = work_slicer(0.001)
    first = slicer.turn()
    assert first is None
    busy(0.002)  # this slice is spent: the next ones wait
    waiters = [slicer.turn(), slicer.turn()]
    assert all(w is not None for w in waiters)
    waiters[0].cancel()
    await asyncio.wait_for(waiters[1], 5)
    assert slicer.waiting == 0


async def test_every_request_of_a_burst_is_answered_while_taking_turns(
        aiohttp_client, make_key, settings: Settings):
    # A slice of a microsecond: almost every request of the burst waits its turn, and each still
    # gets its own answer.
    sliced = dataclasses.replace(settings, loop_slice_ms=0.001)
    api = Api(await aiohttp_client(create_app(sliced)), await make_key("acme", "admin"))
    await load_catalog(api, "movies", [{"id": str(i), "title": f"Movie {i}"} for i in range(40)])
    await put_recommender(api, "movies", "movies", ("Title", "title"))

    async def transform(n: int) -> tuple[int, dict]:
        status, answer, _ = await api.post("/v1/recommenders/movies/transform",
                                           {"Endpoints": {f"e{n}": {"RecommendationItems": [str(n)]}}})
        return status, answer

    answers = await asyncio.gather(*(transform(n) for n in range(40)))
    assert [a for _, a in answers] == [
        {f"e{n}": {"RecommendationItems": [str(n)], "Recommendations": {"Title": [f"Movie {n}"]}}}
        for n in range(40)]
    assert {s for s, _ in answers} == {200}
