"""``aurora-swarm run``: a resumable batch job from a prompts file to a results file."""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import sys
import time
from collections import Counter
from typing import Any, TextIO

import anyio

from ._exceptions import ConfigurationError, EndpointUnavailable, SwarmError
from ._hostfile import parse_hostfile
from ._job_fleet import FleetDownError
from ._job_input import JSONL_KEYS, PromptFile
from ._job_resume import ON_CHANGE, ChangedItemsError
from ._jobs import JobProgress, JobSummary, run_job
from ._openai_batch import looks_like_openai_batch, run_batch_file
from ._pool import VLLMPool
from ._progress import ProgressBar
from ._sampling import check_sampling_values

__all__ = ["add_parser", "main"]

EXIT_FAILED_ITEMS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_UNSENT = 4
EXIT_CHANGED = 5

_DESCRIPTION = """\
Send every prompt of PROMPTS to the fleet listed in a hostfile and append one JSON line per
prompt to the results file. Rerun the same command after a crash (even kill -9) or an
interruption: prompts already in the results file are skipped, the rest are sent, and no id is
written twice. Prompts that failed are sent again by a rerun (--no-retry-failed keeps them).
When every endpoint is down (the servers' job ended, a node rebooted) the run pauses, probes
them and resumes when any is back; after --fleet-wait seconds it stops, leaving the rest unsent.
Each result line carries a fingerprint of its prompt and settings (model, max tokens, sampling,
template, system prompt): a rerun whose prompts or settings changed stops before sending, says
how many items changed, and --on-change rerun sends them again (or keep keeps the old answers).

PROMPTS is a text file (one prompt a line; blank lines are skipped; the id is the line number)
or a JSONL file (*.jsonl, *.ndjson, *.json, or --format jsonl), one object a line with keys:
""" + "\n".join(f"  {key:<14} {meaning}" for key, meaning in JSONL_KEYS.items()) + """

PROMPTS may also be an OpenAI batch file (the input of OpenAI's Batch API and vllm run-batch:
custom_id, method, url, body with /v1/completions or /v1/chat/completions bodies); the results
are then written in the OpenAI batch output format. Lines whose bodies differ only in the prompt
or messages share batched requests."""

_EPILOG = """\
Each results line holds: id, index (0-based input position), success, text, finish_reason,
usage, endpoint, attempts, latency, error, cause, fp (and meta when given). Lines appear in
the order prompts settle; sort by index for input order. An id written twice (--on-change
rerun appends the new answer) is read from its last line.

exit status: 0 every prompt answered; 1 some prompts failed (they are in the results file with
their error; rerun to retry them); 2 bad arguments or input; 3 the fleet is unreachable;
4 the whole fleet stayed down for --fleet-wait seconds: prompts left unsent (not written;
rerun the same command to continue); 5 results of changed prompts or settings, nothing sent
(see --on-change); 128+N stopped by signal N (rerun to continue).

example:
  aurora-swarm run prompts.jsonl --hostfile ready.hostfile --model meta-llama/Llama-3.1-8B \\
      --max-tokens 256 --chat-template auto -o results.jsonl
"""


def add_parser(commands: Any) -> None:
    """Add the ``run`` sub-command to an ``argparse`` sub-parsers object."""
    p = commands.add_parser(
        "run", help="send a prompts file to the fleet, resumably, into a results file",
        description=_DESCRIPTION, epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=lambda args: main(args, p))
    p.add_argument("prompts", metavar="PROMPTS", help="prompts file (text or JSONL)")
    p.add_argument("--hostfile", required=True, metavar="H",
                   help="the fleet: host<TAB>port[<TAB>key=value...] lines")
    p.add_argument("--model", required=True, metavar="M", help="served model name")
    p.add_argument("-o", "--output", required=True, metavar="RESULTS",
                   help="results file (JSONL); appended to, created if missing")
    p.add_argument("--format", choices=("auto", "text", "jsonl", "openai"), default="auto",
                   help="how to read PROMPTS (default: by file name; a JSONL file whose first "
                        "line has custom_id and body is an OpenAI batch file)")
    p.add_argument("--template", metavar="TEXT",
                   help="map-style prompts: fill TEXT's {item} with each line (or JSONL 'item'; "
                        "an object item fills {key} for each key)")
    gen = p.add_argument_group("generation")
    gen.add_argument("--max-tokens", type=_positive_int, default=512, metavar="N",
                     help="most tokens to generate per prompt (default 512; less when the "
                          "context is short)")
    gen.add_argument("--chat-template", metavar="T",
                     help="format prompts with a chat template: 'auto', 'server', a template "
                          "file or a model directory (default: raw prompts)")
    gen.add_argument("--system-prompt", metavar="TEXT",
                     help="system message for every prompt (needs --chat-template)")
    gen.add_argument("--sampling", type=_sampling, action="append", default=[],
                     metavar="KEY=VALUE",
                     help="request field for every prompt, e.g. temperature=0 (repeatable; "
                          "VALUE is read as JSON when it can be)")
    gen.add_argument("--timeout", type=float, default=600.0, metavar="S",
                     help="seconds for a one-prompt request (batches get more; default 600)")
    net = p.add_argument_group("connection")
    net.add_argument("--ca-bundle", metavar="PATH", default=None,
                     help="CA bundle (PEM file or folder) to verify https endpoints with, e.g. a "
                          "site's own CA (default: the system's)")
    net.add_argument("--env-proxy", action=argparse.BooleanOptionalAction, default=True,
                     help="send requests through the proxy http_proxy / https_proxy / all_proxy "
                          "name, minus no_proxy hosts (default: yes; --no-env-proxy connects "
                          "directly, as a fleet on the cluster's network needs)")
    job = p.add_argument_group("job")
    job.add_argument("--retry-failed", action=argparse.BooleanOptionalAction, default=True,
                     help="send prompts that failed in an earlier run again (default: yes)")
    job.add_argument("--on-change", choices=ON_CHANGE, default="stop",
                     help="prompts or settings changed since their result was written: stop "
                          "before sending (default), rerun them (the new answer wins), or keep "
                          "the old answers")
    job.add_argument("--fleet-wait", type=_seconds, default=300.0, metavar="S",
                     help="seconds to wait, probing, while every endpoint is down before "
                          "stopping with the rest unsent (default 300; 0: write what the "
                          "down fleet could not answer as failed)")
    job.add_argument("--window", type=_positive_int, default=20_000, metavar="N",
                     help="prompts per batched call; two run at once (default 20000)")
    job.add_argument("--fsync-interval", type=_fsync_interval, default=1.0, metavar="S",
                     help="seconds between fsyncs of the results file; 0: every write; "
                          "'never' (default 1)")
    job.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                     help="progress on stderr: a bar on a terminal, plain lines otherwise")
    job.add_argument("--progress-interval", type=float, default=None, metavar="S",
                     help="seconds between progress updates (default 0.5 for the bar, 10 for "
                          "lines)")


def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Run the ``run`` sub-command; return the exit status."""
    if args.system_prompt is not None and args.chat_template is None:
        parser.error("--system-prompt needs --chat-template (raw prompts have no roles)")
    try:
        endpoints = parse_hostfile(args.hostfile)
        pool = VLLMPool(endpoints, args.model, max_tokens=args.max_tokens,
                        timeout=args.timeout, sampling=dict(args.sampling) or None,
                        chat_template=args.chat_template, system_prompt=args.system_prompt,
                        verify=args.ca_bundle if args.ca_bundle is not None else True,
                        env_proxies=args.env_proxy)
        batch = args.format == "openai" or (args.format == "auto"
                                            and looks_like_openai_batch(args.prompts))
        if batch and args.template is not None:
            return _error("--template does not apply to an OpenAI batch file (its bodies hold "
                          "the prompts)", EXIT_USAGE)
        prompts = None if batch else PromptFile(args.prompts, args.format, args.template)
    except ConfigurationError as exc:
        return _error(str(exc), EXIT_USAGE)
    display = Progress.choose(args.progress, args.progress_interval, sys.stderr)
    handler = _LogLines(sys.stderr)
    logger = logging.getLogger("aurora_swarm")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        return anyio.run(_run, pool, prompts, args, display)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


class _LogLines(logging.Handler):
    """The ``aurora_swarm`` log on stderr as the command's own lines: the run starting or
    resuming, endpoints benched and back, calls that retried. Written with ``tqdm.write`` so a
    bar is redrawn below them; the job's own summary is left to the printed one."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(logging.INFO)
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "event", None) == "done":
            return
        from tqdm.auto import tqdm  # type: ignore[import-untyped]  # no stubs shipped

        tqdm.write(f"aurora-swarm run: {record.getMessage()}", file=self.stream)


async def _run(pool: VLLMPool, prompts: PromptFile | None, args: argparse.Namespace,
               display: Progress | None) -> int:
    summary: JobSummary | None = None
    error: SwarmError | None = None
    stopped: int | None = None
    async with pool, anyio.create_task_group() as group:

        async def watch_signals() -> None:
            nonlocal stopped
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    stopped = signum
                    group.cancel_scope.cancel()
                    return

        group.start_soon(watch_signals)
        try:
            interval = display.interval if display else 1.0
            if prompts is None:  # an OpenAI batch file, written back in the same format
                summary = await run_batch_file(
                    pool, args.prompts, args.output, window=args.window, progress=display,
                    progress_interval=interval)
            else:
                summary = await run_job(
                    pool, prompts, args.output, retry_failed=args.retry_failed,
                    window=args.window, sync_interval=args.fsync_interval, progress=display,
                    progress_interval=interval, on_change=args.on_change,
                    fleet_wait=args.fleet_wait)
        except SwarmError as exc:
            error = exc
        finally:
            group.cancel_scope.cancel()
    if display is not None:
        display.close()
    if stopped is not None:
        name = signal.Signals(stopped).name
        print(f"aurora-swarm run: stopped by {name}; every result settled so far is in "
              f"{args.output}; rerun the same command to continue", file=sys.stderr)
        return 128 + stopped
    if isinstance(error, FleetDownError):
        print(format_summary(error.summary, args.prompts))
        return _error(str(error), EXIT_UNSENT)
    if error is not None:
        code = (EXIT_UNREACHABLE if isinstance(error, EndpointUnavailable)
                else EXIT_CHANGED if isinstance(error, ChangedItemsError) else EXIT_USAGE)
        return _error(str(error), code)
    assert summary is not None
    print(format_summary(summary, args.prompts))
    return 0 if summary.complete else EXIT_FAILED_ITEMS


def _error(message: str, code: int) -> int:
    print(f"aurora-swarm run: error: {cli_words(message)}", file=sys.stderr)
    return code


# Library argument names in error messages, and the options that set them here. A quoted name
# ('max_tokens') is a JSONL key and stays as it is.
_OPTIONS = {"chat_template": "--chat-template", "system_prompt": "--system-prompt",
            "max_tokens": "--max-tokens", "sampling": "--sampling"}
_ARGUMENT = re.compile(r"(?<![\w'\"-])(" + "|".join(_OPTIONS) + r")(?![\w'\"])")


def cli_words(message: str) -> str:
    """``message`` with the library's argument names as this command's options."""
    return _ARGUMENT.sub(lambda m: _OPTIONS[m[1]], message)


def format_summary(summary: JobSummary, source: str) -> str:
    """The summary ``aurora-swarm run`` prints at the end."""
    stats = summary.stats
    unsent = f", {summary.unsent} left unsent" if summary.unsent else ""
    rows = [
        ("items", f"{summary.total} in {source}: {summary.skipped} done before, "
                  f"{summary.sent} sent now{unsent}"),
        ("answered", f"{summary.answered} in {summary.elapsed:.1f} s "
                     f"({summary.rate:.0f} answered prompts/s)"),
        ("failed", f"{summary.failed}{_causes(summary.failures)}"
                   + (f"; by endpoint:{_causes(summary.failures_by_endpoint, '')}"
                      if summary.failed else "")),
        ("requests", f"{stats.requests} HTTP requests"
                     + (f"; failed and retried or moved:{_causes(stats.failures, '')}"
                        if stats.failures else "")),
    ]
    troubled = [e for e in stats.endpoints if e.failures]
    if troubled:
        named = ", ".join(f"{e.endpoint}{_causes(e.failures)}" for e in troubled[:5])
        more = f" and {len(troubled) - 5} more" if len(troubled) > 5 else ""
        rows.append(("endpoints", f"failed requests on {named}{more}"))
    rows += _endpoint_rows(summary)
    if summary.pauses:
        rows.append(("paused", f"{summary.paused:.0f} s ({summary.pauses} times): every "
                               "endpoint was down; waited for one to come back"))
    rows.append(("tokens", f"{stats.tokens} (prompt {stats.prompt_tokens}, "
                           f"completion {stats.completion_tokens})"))
    if summary.torn_bytes:
        rows.append(("repaired", f"cut a torn last line ({summary.torn_bytes} bytes) left by "
                                 "an interrupted run"))
    if summary.retried_failures:
        rows.append(("retried", f"{summary.retried_failures} prompts that failed before"))
    if summary.changed:
        what = ("sent again (the new answers win when read)" if summary.on_change == "rerun"
                else "kept as they were (--on-change keep)")
        rows.append(("changed", f"{summary.changed} prompts changed since their result was "
                                f"written: {what}"))
    if summary.gone:
        rows.append(("gone", f"{summary.gone} ids in the results file are no longer in "
                             f"{source} (their lines are left as they are)"))
    if summary.unchecked:
        rows.append(("unchecked", f"{summary.unchecked} results written by an older version "
                                  "carry no fingerprint: counted as done without checking "
                                  "their prompt and settings"))
    if summary.complete:
        outcome = f"{summary.output}: every prompt answered"
    elif summary.unsent:
        outcome = (f"{summary.output}: {summary.sent} sent, {summary.unsent} left unsent (the "
                   "whole fleet is down); rerun the same command to continue")
    else:
        left = summary.failed + summary.kept_failures
        outcome = (f"{summary.output}: {left} prompts failed (their lines hold the error); "
                   + ("rerun the same command to retry them" if not summary.kept_failures
                      else "rerun with --retry-failed to retry them"))
    rows.append(("results", outcome))
    width = max(len(name) for name, _ in rows)
    head = ("stopped, the fleet is down" if summary.unsent
            else "done" if summary.complete else "done, with failures")
    return f"aurora-swarm run: {head}\n" + "\n".join(
        f"  {name:<{width}}  {value}" for name, value in rows)


def _endpoint_rows(summary: JobSummary) -> list[tuple[str, str]]:
    """A row naming the endpoints benched during the run."""
    if not summary.benched:
        return []
    return [("benched", f"{_names(list(summary.benched))}"
                        f"{_causes(Counter(summary.benched.values()))}")]


def _names(names: list[str], most: int = 4) -> str:
    """``"a, b, c"``, or ``"5 endpoints: a, b, c, d and 1 more"``."""
    shown = ", ".join(names[:most])
    if len(names) <= most:
        return shown
    return f"{len(names)} endpoints: {shown} and {len(names) - most} more"


def _causes(counts: Any, lead: str = " ") -> str:
    if not counts:
        return ""
    parts = ", ".join(f"{cause}: {n}" for cause, n in sorted(counts.items(),
                                                            key=lambda kv: -kv[1]))
    return f"{lead}({parts})" if lead else f" {parts}"


class Progress:
    """Progress on a stream: a tqdm bar on a terminal, or a plain line every few seconds."""

    def __init__(self, stream: TextIO, bar: bool, interval: float) -> None:
        self.stream = stream
        self.bar = bar
        self.interval = interval
        self._bar: ProgressBar | None = None
        self._last_line = -math.inf

    @classmethod
    def choose(cls, mode: str, interval: float | None, stream: TextIO) -> Progress | None:
        """The display ``--progress MODE`` asks for (``auto``: a bar on a terminal)."""
        if mode == "none":
            return None
        bar = mode == "bar" or (mode == "auto" and stream.isatty())
        return cls(stream, bar, interval if interval is not None else (0.5 if bar else 10.0))

    def __call__(self, p: JobProgress) -> None:
        settled = p.skipped + p.done
        if self.bar:
            if self._bar is None:
                self._bar = ProgressBar(
                    p.total, "aurora-swarm run",
                    {"file": self.stream, "mininterval": 0, "ascii": None}, initial=p.skipped)
            self._bar.advance(settled, p.failed, p.stats.retries)
            return
        now = time.monotonic()
        if now - self._last_line < self.interval * 0.9 and p.remaining:
            return
        self._last_line = now
        share = settled / p.total if p.total else 1.0
        eta = "--" if p.eta is None else _clock(p.eta)
        rate = "--" if p.rate is None else f"{p.rate:,.0f}/s"
        if p.paused is not None:  # the ETA means nothing while the fleet is down
            eta = f"-- (PAUSED {p.paused:.0f} s: every endpoint is down; probing)"
        self.stream.write(f"progress: {settled}/{p.total} done ({share:.1%}), "
                          f"{p.failed} failed, {rate}, ETA {eta}, "
                          f"{p.elapsed:.0f} s elapsed\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar."""
        if self._bar is not None:
            self._bar.close()


def _clock(seconds: float) -> str:
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _fsync_interval(text: str) -> float | None:
    if text == "never":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0 or 'never', got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def _sampling(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE such as temperature=0, got {text!r}")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    try:
        check_sampling_values({key: value})
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("sampling ")) from exc
    return key, value
