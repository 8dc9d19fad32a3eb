"""Tables in and out: pandas DataFrames and Hugging Face Datasets (optional extras).

Inputs need nothing from here: :func:`~aurora_swarm.patterns.map_gather` takes a pandas Series
(a DataFrame column) or a ``Dataset`` column as its items, and
:func:`~aurora_swarm.jobs.run_job` takes those, or a DataFrame or ``Dataset`` whose columns are
JSONL keys. This module turns the results back into tables. pandas and datasets are imported
only when these functions are called (``pip install "aurora-swarm[tables]"`` or
``"aurora-swarm[datasets]"``).
"""

from ._tables import to_dataframe, to_dataset

__all__ = ["to_dataframe", "to_dataset"]

from ._exports import own_exports

own_exports(__name__, globals(), __all__)
del own_exports
