"""Batch jobs at scale: stream results as they settle, run resumable jobs into a results file.

.. code-block:: python

    from aurora_swarm.jobs import PromptFile, run_job, stream_batched

    async with stream_batched(pool, prompts) as results:
        async for index, response in results:          # as each prompt settles
            ...

    summary = await run_job(pool, PromptFile("prompts.jsonl"), "results.jsonl")
    # rerun after a crash: only what results.jsonl does not hold yet is sent

The ``aurora-swarm run`` command is :func:`run_job` with a progress display.
"""

from ._job_input import JSONL_KEYS, JobFileError, JobItem, PromptFile
from ._job_output import JobResult, read_results
from ._job_stream import ResultStream, stream_batched
from ._jobs import JobProgress, JobSummary, check_fleet, run_job, run_job_sync

__all__ = [
    "JSONL_KEYS",
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
