"""`trainyard predict` as a nightly batch job runs it (a cron job scoring a whole table): what is left at --out when
it stops midway or when another run writes there, and what it says while it works. Ray-free: a small stand-in
for the server's /schema and /predict (only what the client reads of them), real files in tmp_path."""
from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tests.stand_in_server import stand_in

SCHEMA = {"features": [{"name": "income", "type": "number"}, {"name": "home", "type": "category",
                                                               "categories": ["OWN", "RENT"]}],
          "label": {"name": "default", "classes": ["no", "yes"]},
          "limits": {"max_records": 1000, "max_body_mb": 8}, "model": {"name": "loans", "version": "v1"}}


@pytest.fixture
def server():
    """A stand-in server; `calls` counts its /predict requests and `on_predict` (when set) runs at each."""
    state = {"calls": 0, "on_predict": None}

    def answer(body: bytes) -> dict:
        records = json.loads(body)["records"]
        state["calls"] += 1
        if state["on_predict"]:
            state["on_predict"]()
        return {"predictions": ["yes" if (r["income"] or 0) < 50 else "no" for r in records],
                "probabilities": [[0.5, 0.5] for _ in records], "model": SCHEMA["model"],
                "request_id": f"{state['calls']:032x}"}

    with stand_in(SCHEMA, answer) as state["url"]:
        yield state


def _rows(path, n):
    pd.DataFrame({"loan_id": range(n), "income": [float(i % 100) for i in range(n)],
                  "home": ["OWN", "RENT"] * (n // 2)}).to_csv(path, index=False)


class _StopsAt:
    """A cell whose writing stops the process (a cron job's SIGTERM, a Ctrl-C) at that row."""

    def __str__(self):
        raise KeyboardInterrupt


def test_a_write_stopped_midway_leaves_no_shorter_table_at_out(tmp_path):
    """A predict stopped by SIGTERM while it wrote 300,000 rows left /tmp/.../p.csv with its first 19,284 rows,
    whole lines: a complete-looking, shorter table that the next step of the job read as the night's scores.
    Now the rows go to a hidden file beside it, renamed when whole: --out is the whole table or nothing."""
    from serving.tables import write_table

    df = pd.DataFrame({"loan_id": range(60_000), "note": ["x"] * 60_000}, dtype=object)
    df.loc[50_000, "note"] = _StopsAt()
    out = tmp_path / "scores.csv"
    with pytest.raises(KeyboardInterrupt):
        write_table(df, out)
    assert not out.exists(), f"{len(out.read_text().splitlines())} lines left at --out"
    assert list(tmp_path.iterdir()) == []          # nor its hidden part
    write_table(df.drop(index=50_000), out)
    assert len(pd.read_csv(out)) == 59_999


def test_a_second_run_into_the_same_out_does_not_replace_the_first_ones_file(tmp_path, server, capsys):
    """Two runs into one --out (a cron job started again while the first still ran) both passed the check made
    before any request, and the later to finish replaced the earlier's file without a word, exit 0. Without
    --overwrite the file that appeared meanwhile is kept now, and this run says so (exit 2)."""
    from trainyard.cli import main

    _rows(tmp_path / "book.csv", 10)
    out = tmp_path / "scores.csv"
    server["on_predict"] = lambda: out.write_text("the other run's scores\n")
    assert main(["predict", "--url", server["url"], str(tmp_path / "book.csv"), "--out", str(out)]) == 2
    kept = tmp_path / f"scores.{os.getpid()}.csv"
    assert (f"exists now, written while this run predicted (by another run into the same --out?); that file is "
            f"kept, and this run's table is at {kept}") in capsys.readouterr().err
    assert out.read_text() == "the other run's scores\n"
    assert pd.read_csv(kept)["loan_id"].tolist() == list(range(10))       # this run's rows, not thrown away
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    # With --overwrite it is replaced, as asked.
    assert main(["predict", "--url", server["url"], str(tmp_path / "book.csv"), "--out", str(out),
                 "--overwrite"]) == 0
    assert pd.read_csv(out)["loan_id"].tolist() == list(range(10))


def test_a_long_predict_says_how_far_it_is_on_stderr(tmp_path, server, capsys, monkeypatch):
    """2,000,000 loans took 7 minutes with no line between the start and the last notes: a stalled run and a
    slow one looked alike in the cron log. Now a line on stderr every PROGRESS_EVERY_S seconds says the rows done,
    the rate and the time left, and one says the end; stdout (the CSV without --out) holds the rows alone."""
    import serving.commands
    from trainyard.cli import main

    monkeypatch.setattr(serving.commands, "PROGRESS_EVERY_S", 0.0)
    _rows(tmp_path / "book.csv", 2500)
    assert main(["predict", "--url", server["url"], str(tmp_path / "book.csv"), "--batch-size", "1000"]) == 0
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("[predict]")]
    assert [line.split(" rows of ")[0] for line in lines] == [
        "[predict] 1,000 of 2,500", "[predict] 2,000 of 2,500", "[predict] 2,500 of 2,500"], err
    assert "(40%)" in lines[0] and "s left" in lines[0] and "s left" not in lines[-1]
    assert "[predict]" not in out and len(pd.read_csv(__import__("io").StringIO(out))) == 2500


def test_records_are_prepared_as_their_requests_are_made_not_all_first(tmp_path, server, monkeypatch):
    """Every row of the table was made a cleaned record and encoded before the first request: 300,000 loans
    waited 13 s for it and held them all (900 MB at its peak; 2,000,000 reached 4.6 GB). Now a request's records
    are made as it is sent (478 MB), so the first request leaves the rest of the table unprepared."""
    import serving.client
    from trainyard.cli import main

    cleaned, at_first = [], []
    clean = serving.client._clean
    monkeypatch.setattr(serving.client, "_clean", lambda record: cleaned.append(1) or clean(record))
    server["on_predict"] = lambda: at_first or at_first.append(len(cleaned))
    _rows(tmp_path / "book.csv", 5000)
    assert main(["predict", "--url", server["url"], str(tmp_path / "book.csv"), "--batch-size", "1000",
                 "--out", str(tmp_path / "scores.parquet")]) == 0
    assert at_first[0] <= 1001 and len(cleaned) == 5000, at_first
    scores = pd.read_parquet(tmp_path / "scores.parquet")
    assert scores["loan_id"].tolist() == list(range(5000)) and scores["record"].max() == 999
    assert scores["prediction"].tolist() == ["yes" if i % 100 < 50 else "no" for i in range(5000)]
