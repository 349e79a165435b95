"""Which actor of the one-actor-per-slot engines gets the next slide (no Ray needed:
the choice is made from each actor's calls in flight)."""

from __future__ import annotations

from collections import deque

from ingest.pipeline.engines.actor_pool import _Actor, next_actor


def _fill(actors: list[_Actor], queue: deque) -> None:
    while queue and (actor := next_actor(actors, len(queue))) is not None:
        actor.calls.append((None, queue.popleft()))


def _slides(actor: _Actor) -> list[str]:
    return [item for _, item in actor.calls]


def test_two_slides_on_two_actors_run_side_by_side() -> None:
    actors = [_Actor(handle=None), _Actor(handle=None)]
    _fill(actors, deque(["a", "b"]))
    assert [_slides(a) for a in actors] == [["a"], ["b"]]


def test_every_actor_gets_a_slide_before_any_gets_a_second() -> None:
    actors = [_Actor(handle=None) for _ in range(3)]
    queue = deque(f"s{i}" for i in range(7))
    _fill(actors, queue)
    # second calls stop once fewer slides wait than there are actors
    assert [_slides(a) for a in actors] == [["s0", "s3"], ["s1", "s4"], ["s2"]]
    assert list(queue) == ["s5", "s6"]


def test_the_tail_waits_for_whichever_actor_frees_first() -> None:
    actors = [_Actor(handle=None), _Actor(handle=None)]
    queue = deque(["s0", "s1", "s2", "s3", "s4", "s5"])
    _fill(actors, queue)  # s0..s3 out, two each
    actors[0].calls.popleft()  # s0 done: two wait, two actors, so a second call is fine
    _fill(actors, queue)
    assert _slides(actors[0]) == ["s2", "s4"]
    actors[0].calls.popleft()  # s2 done: one slide waits; it is not queued behind s4
    _fill(actors, queue)
    assert list(queue) == ["s5"]
    actors[1].calls.clear()  # s1 and s3 done: actor 1 is idle and takes it
    _fill(actors, queue)
    assert _slides(actors[1]) == ["s5"] and not queue


def test_restarting_actors_get_nothing() -> None:
    actors = [_Actor(handle=None, restarting=True), _Actor(handle=None)]
    queue = deque(["a", "b", "c"])
    _fill(actors, queue)
    assert _slides(actors[0]) == [] and _slides(actors[1]) == ["a", "b"]
    actors[1].restarting = True
    assert next_actor(actors, 1) is None
