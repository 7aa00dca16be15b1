"""`trainyard predict --bundle BUNDLE FILE`: a file's rows predicted by a bundle loaded in this process, with no
server and no Ray.

A nightly scoring job had to start `trainyard serve`, wait for it, send the loan book over HTTP and stop the server
again: 2,000,000 rows took 7 minutes that way, and the bundle's own `predict` over the same rows 2.7 minutes. A
bundle is readable without Ray (the bundle contract), so `BundleClient` is a `Client` whose answers come from
`Bundle.predict`, the one prediction path every replica runs, with the notes /predict adds (`out_of_range`,
`unseen_categories`, `imputed`, `truncated`): the file is read, chunked, noted and written exactly as for `--url`.
Its rows have no `request_id` or `record`: nothing is logged, so there is nothing for labels to join.
"""
from __future__ import annotations

import itertools
import re
from typing import Optional

from jobs.bundle import BundleError, load, resolve
from jobs.tabular import training_ranges
from serving.client import Client
from serving.schema import with_ranges

RECORDS_AT_ONCE = 10_000        # rows handed to Bundle.predict at a time (default of --batch-size with --bundle)


class BundleClient(Client):
    """A `Client` answered by the bundle at `path` (a bundle folder, or a run's output holding bundle/)."""

    def __init__(self, path: str, batch_size: Optional[int] = None):
        self.bundle = load(resolve(path))
        self.url = f"bundle {self.bundle.path}"        # what messages name (a server's URL, for `Client`)
        self.token, self._batch_size, self._schema, self._conn = None, batch_size, None, None

    def schema(self) -> dict:
        """What a server of this bundle answers at GET /schema, less what only a server has (its log's kept
        fields, its body limit): features with their training ranges, the label, the model's name and version."""
        if self._schema is None:
            b = self.bundle
            self._schema = {
                "model": {"name": b.lineage.get("name"), "version": b.version}, **b.schema,
                "features": with_ranges(b.schema.get("features", []), training_ranges(b.preprocessor)),
                "limits": {"max_records": max(RECORDS_AT_ONCE, self._batch_size or 0), "max_body_mb": None,
                           "required_features": [], "unknown_fields": "ignore", "log_keep": []},
                "metrics": b.metrics.get("test", {})}
        return self._schema

    def _rows(self, sent):
        """The frame itself, not its records: `Bundle.predict` reads a frame's columns (its records cost more than
        the checks, the model and the notes together)."""
        return sent

    def _chunks(self, rows):
        """The frame's rows a batch at a time, as they are: no request body to encode or keep within a limit.
        (Records given to `predict`, a batch of them at a time.)"""
        if hasattr(rows, "iloc"):
            for start in range(0, len(rows), self.batch_size):
                yield start, None, rows.iloc[start:start + self.batch_size].reset_index(drop=True)
            return
        start = 0
        while chunk := list(itertools.islice(rows, self.batch_size)):
            yield start, None, chunk
            start += len(chunk)

    def _post(self, body: Optional[bytes], chunk: list[dict], start: int, names: Optional[list[str]]) -> tuple:
        try:
            return 200, {**self.bundle.predict(chunk), "model": self.schema()["model"]}
        except BundleError as exc:
            # Its records are counted in the chunk: numbered here in the whole file, as a server's refusal is.
            def whole(m: re.Match) -> str:
                at = int(m[1]) + start
                return f"record {at}" + (f" ({names[at]})" if names and at < len(names) else "") + ":"
            raise BundleError(f"{self.url} cannot predict these rows: "
                              + re.sub(r"\brecord (\d+):", whole, str(exc))) from None

    def predict_frame(self, df, allow_missing: bool = False, names: Optional[list[str]] = None, progress=None):
        """`Client.predict_frame` without `request_id` and `record`, which key a server's prediction log."""
        out = super().predict_frame(df, allow_missing=allow_missing, names=names, progress=progress)
        return out.drop(columns=["request_id", "record"])
