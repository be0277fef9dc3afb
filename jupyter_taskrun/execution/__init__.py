"""The execution side: from a submission to a finished notebook in a fresh kernel.

Parts: ``submission`` (submission → nbformat notebook, parameters, paths), ``kernels`` (launch,
pool, process trees), ``runner`` (nbclient-based cell execution and events), ``durable`` (the
output channel that survives a kernel's death), ``sandbox``, ``processes``, ``output_parsing``,
``outputs`` (folding outputs as nbclient would), ``executor`` (the ``Executor`` interface and the
local executor) and Dask: ``dask_executor`` + ``dask_connection`` (server side) and ``dask_worker``
(what runs inside a Dask worker process).
Imports the shared ``models``/``errors``/``progress``/``formatting`` only; never the server, client or notebook sides.
"""
