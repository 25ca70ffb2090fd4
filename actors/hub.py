"""EventHub: the process's one subscription to job events, fanned out to every live stream.

SSE streams, WebSockets and the pages' live rows attach here, in memory: a subscriber costs
no broker queue, binding or round trip, however many there are. A listener (one job, or a
set of jobs) has its own bounded buffer; an event that finds it full is dropped for that
listener only and counted, so the stream can say so (``take_dropped``). A follower (every
job) has no buffer: a cursor in the ring, from which it takes everything new in one slice.
The hub never waits for either: a slow browser cannot slow the bus, the metrics or the
workers.

Every event gets a sequence number; the last ``ring`` events are kept so a stream that
reconnects with ``Last-Event-ID`` gets what it missed (``listen(after=...)``). An id from
another hub (another process, or this hub before a restart) cannot be resumed: the stream
then starts again from a snapshot of the store, which is the truth.
"""

from __future__ import annotations

import itertools
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import anyio
from anyio.abc import TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from taskflow.messages import JOB_EVENTS, Event
from taskflow.ports import EventBus
from taskflow.streams import Notifier, receive_batch

STREAMED = JOB_EVENTS
"""The public lifecycle events a stream carries (not heartbeats, not cancel control)."""


class Stamped:
    """An event with its place in the hub's sequence. ``data`` and ``frame`` hold what the
    streams made of it (its JSON, its whole SSE frame), so 200 streams encode it once."""

    __slots__ = ("data", "event", "frame", "seq")

    def __init__(self, seq: int, event: Event) -> None:
        self.seq = seq
        self.event = event
        self.data: bytes | None = None
        self.frame: bytes | None = None


class Joined:
    """The frames of a run of consecutive events, joined once (``data``) for the followers
    that flush it on the same tick; ``deflated`` holds what the streams made of it
    compressed (the fragment and its Adler-32), so they compress it once too."""

    __slots__ = ("data", "deflated")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.deflated: tuple[bytes, int] | None = None


@dataclass(eq=False, kw_only=True)
class Listener:
    """One stream's view of the hub: ``receive`` yields ``Stamped`` events in order.

    ``resumed`` is true when ``listen(after=...)`` found the id and put the events after it
    first; ``since`` is the sequence number the listener starts after (a snapshot read after
    ``listen`` returned covers everything up to it). The stream ends (``EndOfStream``) when
    the hub stops."""

    receive: MemoryObjectReceiveStream[Stamped]
    send: MemoryObjectSendStream[Stamped]
    job_ids: frozenset[str] | None
    """The jobs it listens to; ``None``: every job."""
    since: int
    resumed: bool = False
    dropped: int = 0
    """Events lost to a full buffer since the last ``take_dropped``."""
    dropped_total: int = 0

    def take_dropped(self) -> int:
        """How many events were dropped since the last call (and reset the count)."""
        dropped, self.dropped = self.dropped, 0
        return dropped

    def offer(self, item: Stamped) -> None:
        try:
            self.send.send_nowait(item)
        except anyio.WouldBlock:
            self.dropped += 1
            self.dropped_total += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


@dataclass(eq=False, kw_only=True)
class Follower:
    """An all-jobs stream's place in the hub's ring: no buffer of its own, just a cursor (the
    last sequence number it took). ``take`` hands over everything after it in one slice;
    one that fell further behind than it may (or off the ring) skips ahead and is told how
    many it lost. However many followers there are, the hub's work per event is the same."""

    hub: EventHub
    cursor: int
    resumed: bool = False
    dropped_total: int = 0
    closed: bool = False

    @property
    def since(self) -> int:
        """The sequence number it started after (a snapshot covers everything up to it)."""
        return self._since

    def __post_init__(self) -> None:
        self._since = self.cursor

    def ready(self) -> bool:
        return self.closed or self.hub.last_seq > self.cursor

    async def wait(self, timeout: float) -> bool:
        """Until there is something after the cursor (or the hub stopped): ``True``; after
        ``timeout`` seconds of nothing: ``False``."""
        with anyio.move_on_after(timeout):
            while not self.ready():
                await self.hub.changed.wait()
            return True
        return False

    def take(self, limit: int, behind: int) -> tuple[list[Stamped], int]:
        """The events after the cursor, oldest first, at most ``limit``; and how many were
        lost (older than the ring, or more than ``behind`` behind the newest)."""
        ring = self.hub.ring_items()
        head = self.hub.last_seq
        oldest = ring[0].seq if ring else head + 1
        floor = max(oldest - 1, head - behind)
        lost = 0
        if self.cursor < floor:
            lost, self.cursor = floor - self.cursor, floor
            self.dropped_total += lost
        fresh = events_after(ring, self.cursor, limit)
        if fresh:
            self.cursor = fresh[-1].seq
        return fresh, lost


def events_after(ring: deque[Stamped], cursor: int, limit: int) -> list[Stamped]:
    """At most ``limit`` items of ``ring`` numbered after ``cursor``, oldest first. The ring's
    numbers are consecutive, so the first one is found by arithmetic and the slice is taken
    in C (a follower's take costs the same whatever the ring holds); a ring that is not
    consecutive is scanned instead."""
    if not ring or ring[-1].seq <= cursor:
        return []
    start = max(cursor + 1 - ring[0].seq, 0)
    if ring[-1].seq - ring[0].seq == len(ring) - 1:
        newer = len(ring) - start
        if newer > len(ring) // 2:
            return list(itertools.islice(ring, start, start + limit))
        tail = list(itertools.islice(reversed(ring), newer))  # a follower near the head
        tail.reverse()
        return tail[:limit]
    fresh = [item for item in ring if item.seq > cursor]
    return fresh[:limit]


@dataclass(frozen=True, slots=True, kw_only=True)
class HubStats:
    running: bool
    listeners: int
    events: int
    """Events received from the bus since the hub started."""
    dropped: int
    """Events dropped for full listeners (summed over listeners)."""


@dataclass(kw_only=True)
class EventHub:
    """Inputs: every ``STREAMED`` event on ``events`` (one subscription). Outputs: each
    listener's bounded stream. Restart: permanent; a restart closes every listener (their
    clients reconnect and resume from a snapshot) and starts a new id. State: listeners, the
    ring of recent events, and job -> (task, queue) labels learnt from events (bounded)."""

    events: EventBus
    buffer: int = 1024
    """Each listener's buffer, in events."""
    ring: int = 16384
    """Events kept for ``Last-Event-ID`` resumption and for followers to take from."""
    max_labels: int = 100_000
    idle_after: float = 60.0
    """Seconds after the last stream left that the hub keeps its ring (for reconnects)."""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    _seq: int = field(default=0, init=False)
    _ring: deque[Stamped] = field(init=False)
    _all: set[Listener] = field(default_factory=set, init=False)
    _by_job: dict[str, set[Listener]] = field(default_factory=dict, init=False)
    _labels: OrderedDict[str, tuple[str, str]] = field(default_factory=OrderedDict, init=False)
    _followers: set[Follower] = field(default_factory=set, init=False)
    _counts: Counter[type[Event]] = field(default_factory=Counter, init=False)
    changed: Notifier = field(default_factory=Notifier, init=False)
    """Wakes the followers after each batch of events from the bus."""
    _joined: OrderedDict[tuple[int, int], Joined] = field(default_factory=OrderedDict, init=False)
    _running: bool = field(default=False, init=False)
    _watched_until: float = field(default=0.0, init=False)
    _idle: bool = field(default=False, init=False)
    """Nobody has watched for ``idle_after`` seconds: events are only counted."""
    _received: int = field(default=0, init=False)
    _dropped_gone: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self._ring = deque(maxlen=self.ring)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        async with self.events.subscribe(buffer=4096, kinds=STREAMED) as stream:
            self.id = uuid.uuid4().hex[:8]  # a restarted hub cannot resume the old ids
            self._seq = 0
            self._ring.clear()
            self._joined.clear()  # keyed by sequence numbers, which start again
            self._running = True
            task_status.started()
            try:
                while True:
                    try:
                        batch = await receive_batch(stream, 4096)
                    except anyio.EndOfStream:
                        break
                    for event in batch:
                        self.deliver(event)
                    self.changed.notify()
            finally:
                self._running = False
                for listener in {*self._all, *(x for s in self._by_job.values() for x in s)}:
                    listener.send.close()
                for follower in self._followers:
                    follower.closed = True
                self.changed.notify()

    def deliver(self, event: Event) -> None:
        """Number ``event``, keep it in the ring and offer it to every listener it concerns.
        Never blocks (``run`` calls it for each event from the bus). While no stream has been
        attached for ``idle_after`` seconds (an embedded runtime, an API nobody watches) it
        only counts: the ring is emptied then, so an id from before cannot be resumed over
        the gap (a fresh snapshot instead)."""
        self._seq += 1
        self._received += 1
        self._counts[type(event)] += 1
        watched = self._all or self._by_job or self._followers
        if not watched and (self._idle or not self._recently_watched()):
            return
        item = Stamped(self._seq, event)
        self._ring.append(item)
        job_id: str = getattr(event, "job_id", "")
        self._learn(event)
        for listener in self._all:
            listener.offer(item)
        for listener in self._by_job.get(job_id, ()):
            listener.offer(item)

    def _recently_watched(self) -> bool:
        """A stream left less than ``idle_after`` seconds ago (it may reconnect and resume);
        else the hub goes idle: the ring and the joined bytes are dropped."""
        if anyio.current_time() < self._watched_until:
            return True
        self._idle = True
        self._ring.clear()
        self._joined.clear()
        return False

    def _left(self) -> None:
        """A stream let go: keep the ring ``idle_after`` seconds for its reconnect."""
        self._watched_until = anyio.current_time() + self.idle_after

    @property
    def running(self) -> bool:
        return self._running

    @property
    def last_seq(self) -> int:
        return self._seq

    def event_id(self, seq: int) -> str:
        """The id a stream gives the event numbered ``seq`` (and ``Last-Event-ID`` carries)."""
        return f"{self.id}.{seq}"

    def resume_point(self, last_event_id: str | None) -> int | None:
        """The sequence number to resume after, if ``last_event_id`` is this hub's and every
        event after it is still in the ring; else ``None`` (start from a snapshot)."""
        if not last_event_id:
            return None
        hub, _, seq_text = last_event_id.strip().partition(".")
        if hub != self.id or not seq_text.isdigit():
            return None
        seq = int(seq_text)
        if seq > self._seq:
            return None
        oldest = self._ring[0].seq if self._ring else self._seq + 1
        return seq if seq + 1 >= oldest else None

    @contextmanager
    def listen(
        self,
        *,
        job_id: str | None = None,
        job_ids: Collection[str] | None = None,
        after: str | None = None,
        buffer: int | None = None,
    ) -> Iterator[Listener]:
        """A listener for the events of ``job_id``, or of the ``job_ids``, or of every job,
        from now on; its cost is the events of its jobs only. With ``after`` (a
        ``Last-Event-ID`` of this hub still in the ring), the ring's events after it come
        first and ``resumed`` is true. A listener made while the hub is not running is
        already closed (its stream ends at once). Synchronous: nothing can be published
        between reading the ring and registering."""
        ids: frozenset[str] | None = None
        if job_ids is not None:
            ids = frozenset(job_ids)
        elif job_id is not None:
            ids = frozenset((job_id,))
        size = max(1, buffer or self.buffer)
        resume = self.resume_point(after)
        backlog: list[Stamped] = []
        if resume is not None:
            backlog = [
                item
                for item in self._ring
                if item.seq > resume and (ids is None or _job_of(item.event) in ids)
            ]
            size = max(size, len(backlog))
        send, receive = anyio.create_memory_object_stream[Stamped](size)
        listener = Listener(
            receive=receive,
            send=send,
            job_ids=ids,
            since=resume if resume is not None else self._seq,
            resumed=resume is not None,
        )
        for item in backlog:
            listener.offer(item)
        if not self._running:
            send.close()
        self._idle = False
        groups = [self._all] if ids is None else [self._by_job.setdefault(i, set()) for i in ids]
        for group in groups:
            group.add(listener)
        try:
            yield listener
        finally:
            for one in ids or ():
                mine = self._by_job.get(one)
                if mine is not None:
                    mine.discard(listener)
                    if not mine:
                        del self._by_job[one]
            self._all.discard(listener)
            self._dropped_gone += listener.dropped_total
            send.close()
            receive.close()
            self._left()

    def counts(self) -> Mapping[type[Event], int]:
        """Events received since the hub started, by type (read-only; copy to compare)."""
        return self._counts

    @contextmanager
    def follow(self, *, after: str | None = None) -> Iterator[Follower]:
        """A follower of every job's events from now on, or from after ``after`` (a
        ``Last-Event-ID`` of this hub still in the ring: ``resumed`` is true). One made
        while the hub is not running is closed."""
        resume = self.resume_point(after)
        follower = Follower(
            hub=self,
            cursor=resume if resume is not None else self._seq,
            resumed=resume is not None,
            closed=not self._running,
        )
        self._followers.add(follower)
        self._idle = False
        try:
            yield follower
        finally:
            self._followers.discard(follower)
            self._dropped_gone += follower.dropped_total
            self._left()

    def joined(self, items: list[Stamped], frame: Callable[[Stamped], bytes]) -> Joined:
        """The frames of a run of consecutive events, joined once: followers that flush on
        the same tick take the same slice, and share these bytes."""
        key = (items[0].seq, items[-1].seq)
        found = self._joined.get(key)
        if found is None:
            found = self._joined[key] = Joined(b"".join(frame(item) for item in items))
            while len(self._joined) > 64:
                self._joined.popitem(last=False)
        return found

    def ring_items(self) -> deque[Stamped]:
        """The ring itself (read-only for followers)."""
        return self._ring

    def labels(self, job_id: str) -> tuple[str, str] | None:
        """``(task, queue)`` of a job seen on the bus (the queue may be ``""`` if unknown)."""
        return self._labels.get(job_id)

    def learn(self, job_id: str, task: str, queue: str) -> None:
        """Remember a job's task and queue (a stream that read the job from the store)."""
        self._labels[job_id] = (task, queue)
        self._labels.move_to_end(job_id)
        while len(self._labels) > self.max_labels:
            self._labels.popitem(last=False)

    def _learn(self, event: Event) -> None:
        task: str = getattr(event, "task", "") or ""
        queue: str = getattr(event, "queue", "") or ""
        if not task and not queue:
            return
        job_id: str = getattr(event, "job_id", "")
        known = self._labels.get(job_id)
        if known is not None and (not task or known[0] == task) and (not queue or known[1]):
            return
        self.learn(
            job_id, task or (known[0] if known else ""), queue or (known[1] if known else "")
        )

    def statistics(self) -> HubStats:
        listeners = list({*self._all, *(x for s in self._by_job.values() for x in s)})
        dropped = sum(x.dropped_total for x in listeners)
        return HubStats(
            running=self._running,
            listeners=len(listeners) + len(self._followers),
            events=self._received,
            dropped=self._dropped_gone + dropped + sum(f.dropped_total for f in self._followers),
        )


def _job_of(event: Event) -> str:
    job_id: str = getattr(event, "job_id", "")
    return job_id
