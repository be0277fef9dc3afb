"""The execution side: from a submission to a finished notebook in a fresh kernel.

Parts: ``submission`` (submission → nbformat notebook, parameters, paths), ``kernels`` (launch,
pool, process trees), ``runner`` (nbclient-based cell execution and events), ``durable`` (the
output channel that survives a kernel's death), ``sandbox``, ``processes``, ``output_parsing``,
``outputs`` (folding outputs as nbclient would), ``executor`` (the local executor) and Dask.
Imports the shared ``models``/``errors``/``progress`` only; never the server, client or notebook sides.
"""
