"""`trainyard predict --bundle BUNDLE FILE`: a nightly batch scored by a bundle loaded in the process, with no server
and no Ray, as a server of that bundle answers: the same predictions, notes and output (no Ray here)."""
import json

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
    """A run's output folder (OUTPUT/bundle pointing to its version), as `trainyard train` leaves it."""
    pre = Preprocessor(task="classification", label="default", classes=["no", "yes"],
                       numeric=[NumericState("income", fill=50.0, center=50.0, scale=20.0),
                                NumericState("age", fill=40.0, center=40.0, scale=10.0)],
                       categorical=[CategoricalState("region", ["north", "south"])],
                       stats={"numeric": {"age": {"min": 18.0, "max": 90.0}, "income": {"min": 5.0, "max": 300.0}}})
    out = tmp_path_factory.mktemp("run") / "out"
    B.write(out, state_dict=build_model(CONFIG).state_dict(), model_config=CONFIG, preprocessor=pre,
            metrics={"val": {}}, spec_yaml="name: loans\n", lineage={"version": "20261208-010000", "name": "loans"},
            progress=lambda _line: None)
    return out


def loans(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"loan_id": [f"L{i:05d}" for i in range(n)], "income": rng.uniform(10, 250, n).round(1),
                       "age": rng.integers(20, 80, n).astype(float), "region": rng.choice(["north", "south"], n)})
    df.loc[3, "age"] = -500.0           # outside training: said, still predicted
    df.loc[5, "region"] = "east"        # never seen
    df.loc[7, "income"] = np.nan        # imputed
    return df


def test_a_file_is_predicted_by_a_bundle_here_as_its_server_would(output, tmp_path, capsys):
    """A nightly job had to start `trainyard serve`, send the book over HTTP and stop the server again: predict
    took --url alone. The rows are scored by the one prediction path every replica runs, in chunks of
    --batch-size, with the notes and output of --url, minus the log's request keys."""
    df = loans(25)
    df.to_parquet(tmp_path / "book.parquet")
    assert main(["predict", "--bundle", str(output), str(tmp_path / "book.parquet"), "--out",
                 str(tmp_path / "scored.csv"), "--batch-size", "4"]) == 0
    err = capsys.readouterr().err
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False)
    bundle = B.load(B.resolve(output))
    expected = bundle.predict(df.drop(columns="loan_id"))
    assert scored["loan_id"].tolist() == df["loan_id"].tolist()
    assert scored["prediction"].tolist() == expected["predictions"]
    assert np.allclose(scored[["probability_no", "probability_yes"]].to_numpy(), expected["probabilities"])
    assert "request_id" not in scored.columns and "record" not in scored.columns
    assert scored.loc[3, "out_of_range"] == "age=-500 (trained on 18 to 90)"
    assert scored.loc[5, "unseen_categories"] == "region='east'" and scored.loc[7, "imputed"] == "income"
    assert (scored.drop(index=[3, 5, 7])[["out_of_range", "unseen_categories", "imputed"]] == "").all().all()
    assert "note: 1 of 25 row(s) of" in err and "hold numbers well outside the range" in err
    assert "25 predictions from loans 20261208-010000 written to" in err


def test_a_row_the_bundle_refuses_is_named_by_its_place_in_the_input_and_exits_2(output, tmp_path, capsys):
    from serving.offline import BundleClient

    df = loans(12)
    df["age"] = df["age"].astype(object)
    df.loc[9, "age"] = "forty"
    df.to_csv(tmp_path / "book.csv", index=False)
    # The file's reader refuses the cell first, by its line; records given as they are reach the bundle.
    assert main(["predict", "--bundle", str(output), str(tmp_path / "book.csv"), "--batch-size", "4"]) == 2
    assert "column 'age' must hold numbers; 1 cell(s) do not (line 11: 'forty')" in capsys.readouterr().err
    with pytest.raises(B.BundleError) as refused:
        BundleClient(str(output), batch_size=4).predict(df.drop(columns="loan_id").to_dict("records"))
    # The ninth record's refusal counts from the first record given, not from its chunk's (which started at 8).
    assert refused.value.exit_code == 2
    assert "cannot predict these rows: record 9: age='forty' is not a number" in str(refused.value)


def test_a_token_with_a_bundle_and_a_folder_that_is_no_bundle_are_refused(output, tmp_path, capsys):
    loans(3).to_csv(tmp_path / "book.csv", index=False)
    assert main(["predict", "--bundle", str(output), str(tmp_path / "book.csv"), "--token", "t"]) == 2
    assert "--token is for a server (--url)" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(tmp_path), str(tmp_path / "book.csv")]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    with pytest.raises(SystemExit) as ended:       # one of the two, not both
        main(["predict", "--bundle", str(output), "--url", "http://127.0.0.1:9", str(tmp_path / "book.csv")])
    assert ended.value.code == 2
    assert json.loads((B.resolve(output) / "lineage.json").read_text())["name"] == "loans"


def test_a_folder_of_images_is_predicted_by_an_image_bundle_here(tmp_path, capsys):
    from PIL import Image

    from jobs.images import ImagePreprocessor

    pre = ImagePreprocessor(label="label", classes=["bad", "good"], column="image", size=[8, 8], channels=1,
                            mean=[0.5], std=[0.2], stats={"train_rows": 10})
    config = {"kind": "mlp", "input_dim": 64, "output_dim": 2, "hidden": [4], "dropout": 0.0, "activation": "relu"}
    B.write(tmp_path / "out", state_dict=build_model(config).state_dict(), model_config=config, preprocessor=pre,
            metrics={"val": {}}, spec_yaml="name: parts\n", lineage={"version": "1", "name": "parts"},
            progress=lambda _line: None)
    (tmp_path / "today").mkdir()
    pixels = np.random.default_rng(0).integers(0, 255, (3, 8, 8), dtype=np.uint8)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(tmp_path / "today" / f"p{i}.png")
    (tmp_path / "today" / "broken.png").write_bytes(b"\x89PNG not really")
    assert main(["predict", "--bundle", str(tmp_path / "out"), str(tmp_path / "today"), "--out",
                 str(tmp_path / "scored.csv")]) == 0
    scored = pd.read_csv(tmp_path / "scored.csv", keep_default_na=False).set_index("file")
    bundle = B.load(B.resolve(tmp_path / "out"))
    expected = bundle.predict([{"image": image[:, :, None].tolist()} for image in pixels])["predictions"]
    assert [scored.loc[str(tmp_path / "today" / f"p{i}.png"), "prediction"] for i in range(3)] == expected
    assert scored.loc[str(tmp_path / "today" / "broken.png"), "error"].startswith("cannot decode the image")
    assert "3 predictions from parts 1 written to" in capsys.readouterr().err
