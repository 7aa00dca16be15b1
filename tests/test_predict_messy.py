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


def test_an_infinite_number_is_refused_naming_where_it_is(output, tmp_path, capsys):
    """A division by zero upstream wrote `inf` into `income`: the bundle in this process imputed it as a missing
    value without a note (the server refuses it, 422), and evaluate scored those rows so, exit 0 both."""
    df = loans(20)
    df["income"] = df["income"].astype(object)
    df.loc[3, "income"], df.loc[8, "income"] = "inf", "-inf"
    df.to_csv(tmp_path / "book.csv", index=False)
    assert run("predict", "--bundle", output, tmp_path / "book.csv", "--out", tmp_path / "scored.csv") == 2
    assert "column 'income' holds 2 infinite value(s) (line 5: inf, line 10: -inf)" in capsys.readouterr().err
    assert run("evaluate", output, "--data", tmp_path / "book.csv") == 2
    assert "book.csv: column 'income' holds 2 infinite value(s) (line 5" in capsys.readouterr().err
    # Stored as a double (Parquet), the same, by its row.
    loans(20).assign(income=[np.inf] + [50.0] * 19).to_parquet(tmp_path / "book.parquet")
    assert run("predict", "--bundle", output, tmp_path / "book.parquet", "--out", tmp_path / "scored.csv") == 2
    assert "column 'income' holds 1 infinite value(s) (row 1: inf)" in capsys.readouterr().err
    assert not (tmp_path / "scored.csv").exists()


def test_a_header_naming_a_column_twice_and_an_empty_file_are_refused_as_train_refuses_them(output, tmp_path,
                                                                                              capsys):
    """An export that wrote `income` twice (in two currencies, the second x1000): pandas named the second
    'income.1', and predict and evaluate took the first for the feature, exit 0, where `train` refuses the file.
    A 0-byte file (an export that failed) was 'cannot read it as csv: No columns to parse from file'."""
    df = loans(10)
    df.insert(2, "income_eur", df["income"] * 1000)
    df.rename(columns={"income_eur": "income"}).to_csv(tmp_path / "book.csv", index=False)
    assert run("predict", "--bundle", output, tmp_path / "book.csv", "--out", tmp_path / "scored.csv") == 2
    assert "book.csv: column name(s) ['income'] appear more than once in its header" in capsys.readouterr().err
    assert run("evaluate", output, "--data", tmp_path / "book.csv") == 2
    assert "column name(s) ['income'] appear more than once" in capsys.readouterr().err
    # Two trailing empty columns (',,' at each line's end) name nothing twice: read, as before.
    (tmp_path / "trailing.csv").write_text("\n".join(line + ",," for line in
                                                     loans(10).to_csv(index=False).splitlines()) + "\n")
    assert run("predict", "--bundle", output, tmp_path / "trailing.csv", "--out", tmp_path / "scored.csv") == 0
    assert len(pd.read_csv(tmp_path / "scored.csv")) == 10
    capsys.readouterr()
    (tmp_path / "night").mkdir()
    loans(10).to_csv(tmp_path / "night" / "a.csv", index=False)
    (tmp_path / "night" / "b.csv").write_bytes(b"")
    assert run("predict", "--bundle", output, tmp_path / "night", "--out", tmp_path / "night.csv") == 2
    assert f"{tmp_path / 'night' / 'b.csv'}: the file is empty (0 bytes); remove it" in capsys.readouterr().err


def test_numbers_written_as_a_screen_shows_them_are_refused_with_the_way_to_mend_them(output, tmp_path, capsys):
    """'13.70%', '24.319,51' and '24,319.51' were refused with 'Fix them' alone: a percentage could then be mended
    as 13.7 where the model was trained on 0.137 (answered with an out-of-range note, every row off)."""
    df = loans(6)
    df["years_employed"] = [f"{v * 100 / 40:.2f}%" for v in df["years_employed"]]     # trained on 0 to 40: no /100
    df["income"] = [f"{v:,.2f}".replace(",", "X").replace(".", ",").replace("X", ".") for v in df["income"] * 100]
    df.to_csv(tmp_path / "book.csv", index=False)
    assert run("predict", "--bundle", output, tmp_path / "book.csv") == 2
    err = capsys.readouterr().err
    assert "(a decimal comma: save the file anew, e.g. with pandas: pd.read_csv(path, decimal=',', " in err
    assert ("(percentages; the model was trained on 0 to 40: e.g. with pandas, df['years_employed'] = "
            "df['years_employed'].str.rstrip('%').astype(float))") in err
    fractions = loans(6).assign(income=[f"{v:.1f}%" for v in range(6)])
    fractions.to_csv(tmp_path / "rates.csv", index=False)
    assert run("evaluate", output, "--data", tmp_path / "rates.csv") == 2
    assert ".str.rstrip('%').astype(float))" in capsys.readouterr().err       # income trained on 5 to 300
    loans(6).assign(income=["24,319.51"] * 6).to_csv(tmp_path / "us.csv", index=False)
    assert run("predict", "--bundle", output, tmp_path / "us.csv") == 2
    assert "(a thousands separator: save the file anew, e.g. with pandas: pd.read_csv(path, thousands=','))" in \
        capsys.readouterr().err
