"""The job's stages: spec → ingest → preprocess → train → evaluate → bundle (`jobs.pipeline`)."""

# What a run that trains imports once Ray is up, for a caller that can import it while Ray starts
# (`trainyard.cli.connect`): our stages, and the Ray and pyarrow parts they import on first use. Only names;
# importing this package stays free.
RUN_IMPORTS = ("jobs.pipeline", "jobs.ingest", "jobs.profile", "jobs.infer", "pyarrow.dataset", "ray.train.torch")
