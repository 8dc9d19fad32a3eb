"""What a vLLM server is, as the dispatcher sees it: slots, a queue, and a wave time.

A vLLM server runs at most ``slots`` sequences at once (``--max-num-seqs``, or fewer when its KV
cache is short) and keeps one first-come-first-served queue of sequences shared by every request.
A prompt holds a slot for about one *wave*: the time to generate its answer. So ``c`` prompts
queued on an idle server are done after ``ceil(c / slots)`` waves, and a request is answered when
the last of its prompts is: after the prompts queued ahead of it and its own.

:class:`ServerModel` keeps that picture for one endpoint, shared by every call and sub-pool of a
pool: the requests it holds (in arrival order, each with the number of prompts queued ahead of
it), the slots (from ``/metrics``, a pool option or hostfile tag, else estimated), and the wave
time, learned from answers. Everything here is plain arithmetic over an explicit ``now``.

Waves are measured over a *busy period*: from the moment the server got work from us while
holding none, every answer tells how long the server took for everything queued up to and
including that request. A server still working on a request tells something too: it is at least
slow enough not to have finished it yet (:meth:`ServerModel.wave_at`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable

import attrs

__all__ = ["Held", "ServerModel"]

ASSUMED_SLOTS = 256
"""Slots assumed for a server that has not told its own: vLLM's default ``--max-num-seqs``."""
_LATE = 0.25  # share of a wave past due that makes a server clearly late (ServerModel.late)
_MISS_WEIGHT = 0.3  # weight of the latest answer in ServerModel.miss, a running average


@attrs.define(eq=False)
class Held:
    """One request a server holds: ``size`` prompts behind ``ahead`` queued since the busy period
    began, sent at ``sent``."""

    size: int
    ahead: int
    sent: float
    out: bool = False  # handed to the HTTP client (see ServerModel.went_out)

    @property
    def end(self) -> int:
        """The request's last prompt's place in the busy period's queue."""
        return self.ahead + self.size


@attrs.define(eq=False)
class ServerModel:
    """One endpoint's slots, queue and wave time (see the module docstring).

    Attributes
    ----------
    slots:
        Sequences the server runs at once, or ``None`` while unknown.
    slots_source:
        Where ``slots`` came from: ``"metrics"`` (``vllm:num_requests_running`` while requests
        waited), ``"option"`` (a pool option or hostfile tag), ``"past"`` (how many the server
        ran at once before this pool, where its sequences mostly queued: :meth:`note_past`),
        ``"observed"`` (the most prompts seen running at once) or ``None``.
    wave:
        Seconds a prompt holds a slot, as measured, or ``None`` before the first answer.
    wave_bounded:
        Whether ``wave`` is only a lower bound: the server was outrun (a backup answered its
        prompts first) before it answered anything that measured it. Its true wave may be
        much longer, so until it answers it is given at most one wave of work
        (:meth:`room`): that answer then measures the wave itself.
    miss:
        How far from when it was expected an answer typically comes (seconds, a running
        average over the answers that had an expected time), or ``None`` before any. The
        server's wave is measured to the millisecond, but its answers are heard through
        everything else the client and the host are doing: on a client encoding and reading
        requests of 1,024 prompts, answers of servers of 3 ms waves came 50-80 ms off, and
        moves planned on the waves alone chased that noise (see ``FleetGuess.noise``).
    past_wave:
        Seconds a sequence ran on the server before this pool used it, on average (from
        ``vllm:request_inference_time_seconds`` on ``/metrics``), or ``None``: a guess at the
        server's speed *relative to the others* until its own answers are measured. Planned
        with as it is while the slots are known (:meth:`knows_slots`); without them only as
        far as :attr:`past_running` cannot explain it (:func:`past_slowdown`): a sequence runs
        longer on a server running more at once, so a wide server looks slow.
    past_running:
        How many sequences the server ran at once on average while busy before this pool
        used it (``vllm:generation_tokens_total`` over the engine steps), or ``None``.
    new_engine:
        Whether the server had served nothing when this pool first read its ``/metrics``
        while publishing its engine steps, and has since been busy with this pool's first
        requests without answering: all it counts is that work, so its steps tell its speed
        before any answer does (:meth:`note_progress`). Cleared by its first answer, and when
        it holds nothing (its steps would then count idle time too), or outrun: while set,
        its wave is unmeasured.
    step_time:
        Seconds an engine step of such a server takes, at least and at most, as its step
        count showed (see :meth:`note_progress`), or ``None``.
    step_batch:
        Sequences a step of such a server ran on average (tokens over steps), or ``None``.
    unfinished_for:
        How long such a server had been running this pool's first requests, still running
        some, when last read (a bound on the first wave: see ``FleetGuess.floor``), or
        ``None``.
    """

    slots: int | None = None
    slots_source: str | None = None
    wave: float | None = None
    wave_bounded: bool = False
    # The wave as it stood when this busy period began, and the waves it was measured over;
    # and the waves the latest answer of this busy period measured over (see answered).
    prior_wave: float | None = None
    prior_waves: int = 0
    period_waves: int = 0
    past_wave: float | None = None
    past_running: float | None = None
    new_engine: bool = False
    engine_since: float | None = None  # when this pool's first request to it went out
    step_time: tuple[float, float] | None = None
    step_batch: float | None = None
    unfinished_for: float | None = None
    miss: float | None = None
    held: list[Held] = attrs.field(factory=list)
    busy_since: float = 0.0
    queued: int = 0  # prompts queued in this busy period, taken-back ones not counted
    done: int = 0  # prompts answered in this busy period: the queue place answered up to
    answered_at: float = 0.0  # when it answered up to ``done``
    last_answer: float = -math.inf  # when it last answered, in any busy period
    metrics: bool | None = None  # whether /metrics answered; None until asked
    last_reading: int = 0  # the running count of the last gauge reading while requests waited
    # Prompts we held there when a gauge reading last showed no queue: reading again tells
    # nothing new until we hold more (with 4,000 servers that never queue, a read per request
    # cost as much client CPU as the requests).
    unqueued_hold: int = 0
    scraped_at: float = -math.inf

    # -- what the server holds ------------------------------------------------------------------

    def send(self, size: int, now: float) -> Held:
        """Note a request of ``size`` prompts sent at ``now``; returns its handle."""
        if not self.held:
            if self.period_waves and not self.wave_bounded:
                self.prior_wave, self.prior_waves = self.wave, self.period_waves
            self.period_waves = 0
            self.busy_since = now
            self.queued = self.done = 0
            self.answered_at = now
        held = Held(size, self.queued, now)
        self.queued += size
        self.held.append(held)
        return held

    def went_out(self, held: Held, now: float) -> None:
        """Note that ``held``, counted since it was planned, is handed to the HTTP client now.

        A request may go out well after it was planned: staggered behind the others of its
        share, after a resting endpoint's backoff, or late because the client is busy (eight
        callers encoding 88 requests of 512 prompts took 0.3 s). The server queues requests
        as they arrive, so one that goes out before others planned earlier queues ahead of
        them, and the busy period starts when the first goes out: dated from when it was
        planned, the first answers of such a call read a 3 ms wave as 44 ms.
        """
        try:
            index = self.held.index(held)
        except ValueError:
            return
        # Requests that went out are first in ``held``, in the order they went.
        if self.done == 0 and not self.held[0].out:
            self.busy_since = self.answered_at = now
        if self.engine_since is None:
            self.engine_since = now
        first_waiting = next(i for i, h in enumerate(self.held) if not h.out or h is held)
        if first_waiting < index:
            held.ahead = self.held[first_waiting].ahead
            for later in self.held[first_waiting:index]:
                later.ahead += held.size
            del self.held[index]
            self.held.insert(first_waiting, held)
        held.sent, held.out = now, True

    def drop(self, held: Held) -> None:
        """Forget a request that was taken back or failed: the requests behind it move up."""
        try:
            index = self.held.index(held)
        except ValueError:
            return
        del self.held[index]
        for later in self.held[index:]:
            later.ahead -= held.size
        self.queued -= held.size
        if not self.held:
            self.new_engine = False  # idle from now on: its steps no longer time it

    def answered(self, held: Held, now: float) -> None:
        """Note that ``held`` was answered at ``now``, and learn the wave time from it.

        Its place in the server's queue is taken as the prompts answered so far in the busy
        period, not the place it was given when sent: the server queues requests as they
        arrive, and with several callers (or staggered requests) others overtake. A queue
        first-come-first-served answers every request that arrived before this one first, so
        the count is its place. Counted by the place it was given, the pieces of one caller
        that seven others' requests overtook read a 3 ms wave as 30-50 ms, and the next call
        was planned on that (one server given 600 prompts, another 7,600).
        """
        if held not in self.held:
            return
        if self.wave is not None and not self.wave_bounded:
            self._note_miss(held, now, self.wave)
        self.done += held.size
        self.answered_at = self.last_answer = now
        self.new_engine = False  # its answers time it from now on, not its steps
        sample, waves = self._waves_bound(held, now, self.done)
        if sample > 0:
            # Each answer measures everything answered in the busy period so far, so the
            # latest one supersedes those before it. Early answers measure few waves, and a
            # fixed delay (the request's overhead, a busy client reading late) weighs on them
            # most: a 3 ms wave read as 37 ms on the first 8 waves. So the wave is the
            # previous busy periods' and this one's, weighed by the waves each measured.
            # A bound is no measurement: the first answer after one replaces it.
            if self.wave_bounded or self.prior_wave is None:
                self.wave = sample
            else:
                self.wave = ((self.prior_wave * self.prior_waves + sample * waves)
                             / (self.prior_waves + waves))
            self.period_waves = waves
            self.wave_bounded = False
        self.drop_answered(held)

    def _note_miss(self, held: Held, now: float, wave: float) -> None:
        """Fold how far ``held``'s answer at ``now`` is from when it was expected into
        :attr:`miss`: after everything answered before it (first come, first served), or a
        whole number of waves after it was sent, if that is later (sent into free slots)."""
        expected = max(self.due_of(self.done + held.size, wave),
                       held.sent + math.ceil(held.size / self.capacity()) * wave)
        error = abs(now - expected)
        self.miss = error if self.miss is None else (
            (1 - _MISS_WEIGHT) * self.miss + _MISS_WEIGHT * error)

    def outrun(self, held: Held, now: float) -> None:
        """Note that ``held`` was called off unanswered at ``now`` because another request
        answered its prompts first: the server is at least slow enough not to have finished
        it, which is all a server that never answers tells (so it is not taken for an average
        one and handed the same work again).

        That bound can be far below the truth: a request of several waves outrun after ``t``
        seconds shows a wave of at least ``t / waves``, even from a server that had not
        finished its first. So the wave is marked as bounded (:attr:`wave_bounded`).

        A server outrun again while its wave was only bounded has had one wave to answer
        (:meth:`room`) and did not: it is taken as at least twice as slow as the bound said.
        Backups go out as soon as a server is clearly late, so an 8x slower server given one
        wave a call was outrun every call at about the same time, never measured, and handed
        one wave again each time; doubling, its bound soon passes what a call takes.
        """
        if held in self.held and now > self.busy_since:
            lower, _ = self._waves_bound(held, now, held.end)
            if self.wave_bounded and self.wave is not None:
                lower = max(lower, 2 * self.wave)
            if self.wave is None or self.wave < lower:
                self.wave, self.wave_bounded = lower, True
                self.prior_wave, self.prior_waves, self.period_waves = None, 0, 0
        self.new_engine = False  # its wave is bounded now: no longer timed by its steps
        self.drop(held)

    def _waves_bound(self, held: Held, now: float, end: int) -> tuple[float, int]:
        """The wave that ``held``, done (or not yet done) at ``now`` at queue place ``end``,
        shows, and over how many waves.

        Counted over the busy period, its last prompt is ``ceil(end / slots)`` waves in, which
        holds while the server is saturated. A request sent later into free slots starts when
        it arrives, not with the busy period, so its own time bounds the wave too (counting
        from the busy period's start, eight callers sending over 0.2 s into idle slots made a
        0.2 s wave look like 0.4 s).
        """
        slots = self.capacity()
        waves = math.ceil(end / slots)
        wave = (now - self.busy_since) / waves
        if now - held.sent < wave:
            return now - held.sent, math.ceil(held.size / slots)
        return wave, waves

    def drop_answered(self, held: Held) -> None:
        """Remove an answered request; the others queue after everything answered so far.

        The server answers first come, first served, so what it still holds queued behind
        what it answered, whatever order they were sent in: requests sent together race to
        the server (each on its own connection), and one that went out first may arrive last.
        Kept where it was thought to be, such a request looked due (its places answered
        already), then late, and its endpoint was passed over as a helper.
        """
        try:
            self.held.remove(held)
        except ValueError:
            return
        place = self.done
        for later in self.held:
            later.ahead = place
            place += later.size

    # -- slots ----------------------------------------------------------------------------------

    def note_past(self, wave: float | None, running: float | None,
                  queue: float | None) -> None:
        """Learn from what the server published of its past before this pool: its sequences'
        average ``wave``, how many it ran at once on average while busy (``running``) and how
        long they waited for a slot on average (``queue``).

        While sequences wait, the running ones fill the slots, as the live gauges show (see
        :meth:`note_reading`). So where the past sequences waited half a wave or more on
        average, the server spent its busy time mostly full, and how many it ran at once is
        about its slots, if anything fewer: a pool that has never seen a queue there plans with
        that (``"past"``) rather than vLLM's default. A server of 16 slots planned as one of
        256 is given a 3x slower server's share in one wave it does in six. Below half a wave
        of waiting (one call of 300 prompts on 256 slots: 0.15 of a wave), the average mixes
        full waves with a part-full one and says little. The caller passes no ``queue`` where
        the past steps mostly read prompts (see ``ServerGauges.decoding``): there, generated
        tokens a step are no count of sequences (a 64-slot vLLM server that had served
        525-token prompts with one-token answers showed 17 at once).
        """
        self.past_wave, self.past_running = wave, running
        if (wave is not None and running is not None and queue is not None
                and queue >= wave / 2):
            self.learn_slots(math.ceil(running - 1e-9), "past")

    def note_progress(self, tokens: float, steps: float, running: int, asked: float,
                      received: float) -> None:
        """Learn how fast a server new to work steps (:attr:`new_engine`), from one reading
        of its generated ``tokens`` and engine ``steps``, asked for at ``asked`` and received
        at ``received``.

        Each of its steps since this pool's first request went out (:attr:`engine_since`) is
        this pool's work, and a running sequence gains a token a step. Steps are whole: ``n``
        of them counted a time ``t`` after the first request went out took at most ``t / n``
        each, and at least ``t / (n + 1)`` (the next had not ended). A server that has not
        stepped at all in ``t`` takes at least ``t`` a step. Those bounds rank the servers
        long before any answers (:class:`FleetGuess`): on a fleet that has never served, an
        8x slower server was found only when its first wave was late, and a one-wave call
        took 2.4x what a split knowing the speeds takes.
        """
        if not self.new_engine or self.engine_since is None or asked <= self.engine_since:
            return
        # Still running: the first wave has lasted this long at least (see FleetGuess.floor).
        self.unfinished_for = asked - self.engine_since if running > 0 else None
        least = (asked - self.engine_since) / (steps + 1)
        most = (received - self.engine_since) / steps if steps >= 1 else math.inf
        self.step_time = (least, most)
        self.step_batch = tokens / steps if steps >= 1 and tokens > 0 else None

    def learn_slots(self, slots: int, source: str) -> None:
        """Record the server's slots: a reading from ``/metrics`` or an option wins over the
        past, the past over an observation, and an observation only ever raises the slots
        (a past estimate too: it is a lower bound)."""
        if slots < 1:
            return
        if source == "observed":
            if self.slots_source in (None, "observed", "past") and (self.slots or 0) < slots:
                # A raised past estimate is still an estimate (a reading may lower it).
                self.slots = slots
                self.slots_source = "past" if self.slots_source == "past" else source
            return
        if source == "past":
            if self.slots_source in (None, "observed") and (self.slots or 0) < slots:
                self.slots, self.slots_source = slots, source
            return
        if source == "metrics" and self.slots_source == "metrics":
            slots = max(slots, self.slots or 0)
        self.slots, self.slots_source = slots, source

    def note_reading(self, running: int, waiting: int, holding: int) -> bool:
        """Learn from one ``/metrics`` reading (``vllm:num_requests_running`` and ``_waiting``)
        taken while we held ``holding`` prompts there; returns whether the slots are newly read.

        While requests wait, the running ones fill the slots: that is the server's capacity. A
        server still taking a large request in runs fewer for a moment, so a reading counts once
        it repeats; until then it is an observation (a lower bound), as is a reading with
        nothing waiting. A reading with nothing waiting also says that reading again tells
        nothing new until we hold more prompts there (:attr:`unqueued_hold`), if it shows all of
        them running.
        """
        self.metrics = True
        if waiting <= 0:
            # Only a server running all we hold has shown it queues none of it. One running
            # fewer has not taken all of it in yet: a vLLM server short of CPU read running 0,
            # waiting 0 while it held 512 of our prompts, and then queued them.
            if running >= holding:
                self.unqueued_hold = max(self.unqueued_hold, holding)
            if running > 0:
                self.learn_slots(running, "observed")
            return False
        if running <= 0 or (running < (self.slots or 0) and (
                self.slots_source != "past" or running < self.last_reading)):
            # Fewer running than were once seen at once is not the capacity: between steps of
            # short answers a vLLM server read 1 running of its 8 slots, with prompts waiting.
            # A past estimate may be too high, so a lower reading may replace it, but not one
            # lower than the reading before: a 64-slot server estimated at 17 from its past,
            # then read twice at 1 between steps, would be planned with 1 slot for good (it is
            # then never given enough to queue, and never read again).
            return False
        if running != self.last_reading:
            self.last_reading = running
            self.learn_slots(running, "observed")
            return False
        changed = self.capacity() != running
        self.learn_slots(running, "metrics")
        if changed:
            # measured against the wrong slots: measure again
            self.wave, self.wave_bounded = None, False
            self.prior_wave, self.prior_waves, self.period_waves = None, 0, 0
        return changed

    def room(self) -> int | None:
        """Prompts the server may be given now, or ``None`` for no limit.

        While its wave is only bounded (:attr:`wave_bounded`), what fits in its free slots: one
        wave, which its answer measures. Planned with the bound, an 8x slower server outrun in
        one call was handed four waves in the next and outrun again, call after call, never
        answering (the call waited for the backups of its share each time).
        """
        if not self.wave_bounded:
            return None
        return self.free_slots()

    def knows_slots(self) -> bool:
        """Whether the slots were read or given, not assumed or only observed."""
        return self.slots_source in ("metrics", "option")

    def capacity(self) -> int:
        """The slots to plan with: as read, given or estimated from the past; else
        :data:`ASSUMED_SLOTS`, or more if more were seen running at once (an observation is
        only a lower bound)."""
        if self.slots is None:
            return ASSUMED_SLOTS
        if self.slots_source == "observed":
            return max(self.slots, ASSUMED_SLOTS)
        return self.slots

    # -- time -----------------------------------------------------------------------------------

    def oldest(self) -> Held | None:
        """The request first in the server's queue."""
        return self.held[0] if self.held else None

    def planned_wave(self, fallback: float | None) -> float | None:
        """The wave as measured, or ``fallback`` (the fleet's typical wave) before any; the
        longer of the two while the wave is only bounded (outrun: no faster than the others)."""
        wave = self.wave if self.wave is not None else fallback
        if self.wave_bounded and fallback is not None and wave is not None:
            wave = max(wave, fallback)
        return wave

    def late(self, now: float, fallback: float | None) -> bool:
        """Whether the oldest request is clearly overdue: a quarter of a wave past when the
        planned wave (not the silence bound, which grows with the wait) says it was due."""
        return self.overdue(now, fallback) > 0

    def overdue(self, now: float, fallback: float | None) -> float:
        """How much later than planned to expect everything the server holds: nothing unless
        it is clearly late (a quarter of a wave past due by its planned wave, :meth:`late`);
        then as long as the late wave has run so far.

        The silence bound of :meth:`wave_at` grows with the wait, so by it a late server's
        oldest request is always due now and the next one always about to start: an
        estimate that never lets its waiting work be taken back. Having run this long
        unanswered, the wave its oldest request ends in may well take as long again. That is
        the whole busy period for a first wave (a slow or stuck server), but only about a wave
        for one late among many: counted from the busy period's start, a server of 3 ms waves
        read a few milliseconds late 0.3 s into a call looked 0.3 s behind, and eight alike
        servers took back 30 requests from one another.
        """
        oldest = self.oldest()
        wave = self.planned_wave(fallback)
        if oldest is None or wave is None:
            return 0.0
        due = self.due_of(oldest.end, wave)
        if now < due + _LATE * wave:
            return 0.0
        return max(0.0, now - max(oldest.sent, due - wave))

    def wave_at(self, now: float, fallback: float | None,
                heard: float = math.inf, floor: float | None = None) -> float | None:
        """The wave time to plan with at ``now``, at least ``floor`` (see
        :meth:`FleetGuess.floor_for`).

        The measured wave, or ``fallback`` (the fleet's typical wave) before any, or the
        longer of the two while the wave is only bounded; but at least as long as the server
        has already spent without answering its oldest request: a server that has not answered
        ``c`` prompts in ``t`` seconds takes more than ``t / ceil(c / slots)`` a wave.

        That silence counts only up to ``heard``, the last time the client read an answer
        from any server: a client too busy to read answers (eight callers planning at once)
        hears silence from every server, and the bound would then be its own lag divided by
        each server's first request, making the server given the larger first request look
        faster (one of eight alike servers was given 14% more work each call).
        """
        wave = self.planned_wave(fallback)
        oldest = self.oldest()
        slots = self.capacity()
        if oldest is not None:
            start = self.answered_at if self.done else self.busy_since
            waves = math.ceil(oldest.end / slots) - math.floor(self.done / slots)
            until = min(now, heard)
            if waves > 0 and until > start:
                # Sent later into free slots, it has run only since it was sent.
                lower = min((until - start) / waves, until - oldest.sent)
                wave = lower if wave is None or wave < lower else wave
        if floor is not None and (wave is None or wave < floor):
            wave = floor
        return wave

    def finish_of(self, place: int, now: float, wave: float) -> float:
        """When the prompt at queue ``place`` should be done, by waves from the last answer
        (now, if that time is past)."""
        if place <= self.done:
            return now
        return max(now, self.due_of(place, wave))

    def due_of(self, place: int, wave: float) -> float:
        """When the prompt at queue ``place`` was due, by waves from the last answer."""
        slots = self.capacity()
        waves = max(0, math.ceil(place / slots) - math.ceil(self.done / slots))
        start = self.answered_at if self.done else self.busy_since
        return start + waves * wave

    def start_of(self, place: int, now: float, wave: float) -> float:
        """When the prompt after queue place ``place`` should get a slot."""
        slots = self.capacity()
        waves = place // slots - math.ceil(self.done / slots)
        start = self.answered_at if self.done else self.busy_since
        return start + max(0, waves) * wave

    def free_at(self, now: float, wave: float | None) -> float:
        """When the server should be done with everything it holds."""
        if not self.held or wave is None:
            return now
        return self.finish_of(self.queued, now, wave)

    def outstanding(self) -> int:
        """Prompts in the requests the server holds."""
        return sum(h.size for h in self.held)

    def free_slots(self) -> int:
        """Slots not taken by the prompts the server holds (as far as its slots are known)."""
        return max(0, self.capacity() - self.outstanding())


def past_slowdown(wave: float, running: float, fleet_wave: float,
                  fleet_running: float) -> float:
    """How much slower than the fleet a server's past shows it to be, when its slots are not
    known: a server that ran sequences in ``wave`` seconds each, ``running`` at once on
    average, beside a fleet's typical ``fleet_wave`` and ``fleet_running``.

    A sequence runs longer beside more others, by a factor between 1 (a step costs the same
    whatever the batch, as decoding on a GPU nearly does) and the batch itself (a step costs
    in proportion, as on a CPU). So the server's speed lies between what its wave says
    (``wave / fleet_wave`` times slower) and what its throughput says (``running / wave``
    sequences a second against the fleet's): it is planned with the nearer of the two to 1,
    and as alike when they disagree. On real vLLM servers on one CPU, a server of 64 slots ran
    a sequence 7x longer than one of 8: by its wave 7x slower, by its throughput as fast.

    Examples
    --------
    >>> past_slowdown(0.8, 8, 0.1, 8)  # ran as many at once: its wave tells
    8.0
    >>> past_slowdown(0.7, 64, 0.1, 8)  # 7x the wave, 8x the batch: nothing tells
    1.0
    >>> past_slowdown(0.4, 16, 0.1, 8)  # 4x the wave at 2x the batch: 2x slower at least
    2.0
    """
    by_wave = wave / fleet_wave
    by_throughput = by_wave * fleet_running / running
    if by_wave >= 1 and by_throughput >= 1:
        return min(by_wave, by_throughput)
    if by_wave <= 1 and by_throughput <= 1:
        return max(by_wave, by_throughput)
    return 1.0


@attrs.frozen
class FleetGuess:
    """What to plan with for a server whose wave this pool has not measured yet.

    Its past wave (what it ran like before this pool) says how fast it is next to the others,
    not in this workload's units (other prompts, other ``max_tokens``), so past waves are scaled
    by how the measured waves compare with the past waves of the same servers. How long a
    sequence ran depends on how many ran beside it (on real vLLM servers on one CPU, a sequence
    ran 7x longer on a server of 64 slots than on one of 8, which was the slower server): a
    past wave counts as it is for a server whose slots are known, and for one whose slots are
    not only as far as how many it ran at once cannot explain it (:func:`past_slowdown`, against
    the fleet's median past). A server with neither gets the fleet's typical wave, and before
    anything is known every server is alike.
    """

    typical: float | None
    scale: float = 1.0
    heard: float = -math.inf  # when any server last answered (see ServerModel.wave_at)
    noise: float = 0.0
    """How far answers typically land from when they were expected, over the fleet (the
    median of :attr:`ServerModel.miss`): no estimate is finer than that, so work is worth
    moving only when that saves more than twice it
    (:func:`~aurora_swarm._rebalance.take_back`, :func:`~aurora_swarm._rebalance.back_up`)."""
    past_fleet: tuple[float, float] | None = None
    """The median past wave and past sequences at once over the servers that published both
    (see :func:`past_slowdown`), or ``None``."""
    step_fleet: tuple[float, float | None] | None = None
    """Over the servers new to work that have stepped (:meth:`ServerModel.note_progress`):
    the median of the most a step takes, and the median sequences a step; or ``None``."""
    floor: float | None = None
    """Before any wave is measured, and only while some server new to work steps clearly
    slower than the others: the median time such servers were seen still running their first
    wave, which every wave lasts at least; else ``None`` (see :meth:`floor_for`)."""

    @classmethod
    def of(cls, servers: Iterable[ServerModel]) -> FleetGuess:
        """The guess from every server's measured and past waves."""
        servers = list(servers)
        pasts = [(s.past_wave, s.past_running) for s in servers
                 if s.past_wave is not None and s.past_running]
        past_fleet = None
        if pasts:
            past_fleet = (statistics.median(w for w, _ in pasts),
                          statistics.median(r for _, r in pasts))
        measured: list[float] = []
        ratios: list[float] = []
        past: list[float] = []
        misses: list[float] = []
        heard = -math.inf
        for server in servers:
            heard = max(heard, server.last_answer)
            if server.miss is not None:
                misses.append(server.miss)
            past_wave = _past_of(server, past_fleet)
            if server.wave is not None and not server.wave_bounded:
                measured.append(server.wave)
                if past_wave is not None:
                    ratios.append(server.wave / past_wave)
            elif past_wave is not None:
                past.append(past_wave)
        scale = statistics.median(ratios) if ratios else 1.0
        noise = statistics.median(misses) if misses else 0.0
        stepped = [(s.step_time[1], s.step_batch) for s in servers
                   if s.step_time is not None and s.step_time[1] < math.inf]
        step_fleet = None
        if stepped:
            batches = [b for _, b in stepped if b is not None]
            step_fleet = (statistics.median(most for most, _ in stepped),
                          statistics.median(batches) if batches else None)
        if measured:
            return cls(statistics.median(measured), scale, heard, noise, past_fleet, step_fleet)
        guess = cls(statistics.median(past) * scale if past else None, scale, heard, noise,
                    past_fleet, step_fleet)
        if guess.typical is not None or step_fleet is None:
            return guess
        unfinished = [s.unfinished_for for s in servers if s.unfinished_for is not None]
        if unfinished and any(guess.step_slowdown(s) > 1 for s in servers):
            return attrs.evolve(guess, floor=statistics.median(unfinished))
        return guess

    def wave_for(self, server: ServerModel) -> float | None:
        """The wave to assume for ``server`` until it is measured."""
        past_wave = _past_of(server, self.past_fleet)
        return past_wave * self.scale if past_wave is not None else self.typical

    def wave_at(self, server: ServerModel, now: float) -> float | None:
        """The wave to plan ``server`` with at ``now`` (:meth:`ServerModel.wave_at`, with
        this guess's fallback, last answer heard and floor)."""
        return server.wave_at(now, self.wave_for(server), self.heard, self.floor_for(server))

    def floor_for(self, server: ServerModel) -> float | None:
        """The least wave ``server`` can have as far as the steps show, or ``None``: the
        fleet's typical wave times how much slower than the others it steps, at least
        (:meth:`step_slowdown`); before any wave is measured, the fleet's :attr:`floor` times
        that, for every server.

        A bound, not a plan: the server's planned wave stays the typical one, so it is still
        found late as soon as that says (:meth:`ServerModel.late`). Planned 1.7x slower than
        the others, as its first few steps proved, a 3x slower server was found late only
        after its own wave would have ended.
        """
        slower = self.step_slowdown(server)
        if self.typical is None:
            # Before any wave is measured, the floor bounds every server's.
            return None if self.floor is None else self.floor * slower
        return self.typical * slower if slower > 1 else None

    def step_slowdown(self, server: ServerModel) -> float:
        """How much slower than the fleet's typical server new to work ``server`` steps, at
        least (1 when nothing shows it slower): its least step time against the median of
        the most, as far as a larger batch cannot explain it (:func:`past_slowdown`)."""
        if self.step_fleet is None or server.step_time is None or server.wave is not None:
            return 1.0
        fleet_step, fleet_batch = self.step_fleet
        least = server.step_time[0]
        if fleet_batch is None or server.step_batch is None:
            slower = least / fleet_step
        else:
            slower = past_slowdown(least, server.step_batch, fleet_step, fleet_batch)
        return max(1.0, slower)


def _past_of(server: ServerModel, past_fleet: tuple[float, float] | None) -> float | None:
    """The past wave to plan ``server`` with: as published where its slots are known; else the
    fleet's median past wave times :func:`past_slowdown`; else ``None``."""
    if server.past_wave is None:
        return None
    if server.knows_slots():
        return server.past_wave
    if past_fleet is None or not server.past_running:
        return None
    fleet_wave, fleet_running = past_fleet
    return fleet_wave * past_slowdown(server.past_wave, server.past_running, fleet_wave,
                                      fleet_running)
