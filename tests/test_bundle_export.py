"""Exporting bundles from a real training run, as `trainyard train`/`tune` do (`jobs.pipeline.export_bundle`):
a second export keeps the first, locally and on object storage (S3 through moto's server), and the latest is
what a run's output folder loads as."""
import os

import pytest

from jobs import bundle as B
from tests.s3_fixtures import s3_bucket  # noqa: F401  (moto's S3 server and a bucket)


@pytest.mark.slow
def test_a_second_export_keeps_the_first_locally_and_on_s3(ray_session, tmp_path, telemetry_dir,
                                                          s3_bucket):  # noqa: F811
    from jobs.pipeline import export_bundle, prepare, storage_root
    from jobs.spec import load_spec
    from jobs.train import fit
    from tests.conftest import small_spec, write_spec

    quiet = lambda *_: None
    spec = load_spec(write_spec(tmp_path / "s.yaml", small_spec("export", telemetry_dir, tmp_path / "out",
                                                                epochs=1, early_stop=None)))
    prepared = prepare(spec, progress=quiet)
    outcome = fit(spec, prepared, storage_path=storage_root(spec), run_name="run", progress=quiet)

    lines = []
    first, _ = export_bundle(spec, prepared, outcome, progress=quiet)
    second, metrics = export_bundle(spec, prepared, outcome, progress=lines.append)
    out = tmp_path / "out"
    assert first != second and first.parent == second.parent == out / "bundles"
    assert os.readlink(out / "bundle") == f"bundles/{second.name}"
    assert B.load(out).version == second.name and B.load(first).version == first.name
    assert B.load(out).metrics == metrics
    assert f"[bundle] version {second.name} in {second}; {out / 'bundle'} points to it (1 earlier version(s) " \
           f"kept in {out / 'bundles'})" in lines

    remote = spec.model_copy(update={"output": f"{s3_bucket}/runs/export"})
    uris = [export_bundle(remote, prepared, outcome, progress=quiet)[0] for _ in range(2)]
    assert uris[0] != uris[1] and all(u.startswith(f"{s3_bucket}/runs/export/bundles/") for u in uris)
    assert B.load(remote.output_dir).version == uris[1].rsplit("/", 1)[-1]
    assert B.load(uris[0]).version == uris[0].rsplit("/", 1)[-1]
    assert B.load(f"{remote.output_dir}/bundle").metrics == metrics
