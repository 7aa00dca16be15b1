"""A nightly export that changed under `trainyard predict --bundle` and `trainyard evaluate`: cells that read as
numbers but are not the numbers the model was trained on are refused by the shared reader
(`serving.tables.numbers_read_as_text`), naming the column, a value and where it is, exit 2 (no Ray here)."""
import numpy as np
import pandas as pd
import pytest

from jobs import bundle as B
from jobs.model import build_model
from jobs.tabular import CategoricalState, NumericState, Preprocessor
from trainyard.cli import main

CONFIG = {"kind": "mlp", "input_dim": 5, "output_dim": 2, "hidden": [4], "dropout": 0.0, "activation": "relu"}


@pytest.fixture(scope="module")
def output(tmp_path_factory):
    pre = Preprocessor(task="classification", label="default", classes=["no", "yes"],
                       numeric=[NumericState("income", fill=50.0, center=50.0, scale=20.0),
                                NumericState("years_employed", fill=8.0, center=8.0, scale=5.0)],
                       categorical=[CategoricalState("region", ["north", "south"])],
                       stats={"numeric": {"years_employed": {"min": 0.0, "max": 40.0},
                                          "income": {"min": 5.0, "max": 300.0}}})
    out = tmp_path_factory.mktemp("run") / "out"
    B.write(out, state_dict=build_model(CONFIG).state_dict(), model_config=CONFIG, preprocessor=pre,
            metrics={"val": {}}, spec_yaml="name: loans\n", lineage={"version": "20261208-020000", "name": "loans"},
            progress=lambda _line: None)
    return out


def loans(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"loan_id": [f"L{i:05d}" for i in range(n)], "income": rng.uniform(10, 250, n).round(1),
                         "years_employed": rng.uniform(0, 30, n).round(1), "region": rng.choice(["north", "south"], n),
                         "default": rng.choice(["no", "yes"], n)})


def run(*argv) -> int:
    return main([str(a) for a in argv])


@pytest.mark.parametrize("when", [pd.Timestamp("2019-03-01", tz="Europe/Berlin"), pd.Timestamp("2019-03-01"),
                                  pd.Timedelta(days=400)])
def test_a_date_where_a_number_was_is_refused_not_scored_as_nanoseconds(output, tmp_path, capsys, when):
    """A warehouse export whose `years_employed` became a timestamp (the employment's start): pandas made each
    date its nanoseconds since 1970 (1.55e15); predict answered every row 'no' with an out-of-range note, exit 0,
    and evaluate scored the model AUC 0.50 and warned that it 'has not learned to tell the classes apart'."""
    df = loans(20).assign(years_employed=when)
    df.to_parquet(tmp_path / "book.parquet")
    assert run("predict", "--bundle", output, tmp_path / "book.parquet", "--out", tmp_path / "scored.csv") == 2
    err = capsys.readouterr().err
    assert "column 'years_employed' holds dates or times (" in err and "where the model takes a number " \
           "(trained on 0 to 40)" in err and repr(str(when)) in err
    assert not (tmp_path / "scored.csv").exists()
    assert run("evaluate", output, "--data", tmp_path / "book.parquet") == 2
    assert f"{tmp_path / 'book.parquet'}: column 'years_employed' holds dates or times" in capsys.readouterr().err

