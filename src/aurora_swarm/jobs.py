"""Batch jobs at scale: stream results as they settle, run resumable jobs into a results file.

:func:`stream_batched` hands out each result of a batched call as it settles. :func:`run_job`
appends one line per prompt to a results file, which is its checkpoint: run again (after a
crash, say), it sends only what the file does not hold yet. On
:class:`~aurora_swarm.testing.FakeFleet`, whose agents answer ``"ECHO: "`` and the prompt:

>>> import anyio, tempfile
>>> from pathlib import Path
>>> from aurora_swarm import VLLMPool
>>> from aurora_swarm.jobs import PromptFile, read_results, run_job
>>> from aurora_swarm.testing import FakeFleet
>>> async def job(folder):
...     prompts, output = Path(folder, "prompts.txt"), Path(folder, "results.jsonl")
...     prompts.write_text("What is 2 + 2?\\nName a prime.\\n")
...     async with FakeFleet(2) as fleet, VLLMPool(fleet.endpoints, model=fleet.model) as pool:
...         first = await run_job(pool, PromptFile(prompts), output)
...         again = await run_job(pool, PromptFile(prompts), output)  # nothing left to send
...     return first.answered, again.skipped, [r.text for r in read_results(output)]
>>> with tempfile.TemporaryDirectory() as folder:
...     anyio.run(job, folder)
(2, 2, ['ECHO: What is 2 + 2?', 'ECHO: Name a prime.'])

The ``aurora-swarm run`` command is :func:`run_job` with a progress display.
"""

from ._job_fleet import FleetDownError
from ._job_input import JSONL_KEYS, JobFileError, JobItem, PromptFile
from ._job_output import JobResult, read_results
from ._job_resume import ChangedItemsError
from ._job_stream import ResultStream, stream_batched
from ._jobs import JobProgress, JobSummary, check_fleet, run_job, run_job_sync

__all__ = [
    "JSONL_KEYS",
    "ChangedItemsError",
    "FleetDownError",
    "JobFileError",
    "JobItem",
    "JobProgress",
    "JobResult",
    "JobSummary",
    "PromptFile",
    "ResultStream",
    "check_fleet",
    "read_results",
    "run_job",
    "run_job_sync",
    "stream_batched",
]

from ._exports import own_exports

own_exports(__name__, globals(), __all__)
del own_exports
