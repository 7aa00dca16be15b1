"""Images through the same pipeline: folders and Parquet, corrupt files, layouts, train-only augmentation,
bundle predictions from base64 and pixel arrays."""
import base64
import json

import numpy as np
import pandas as pd
import pytest
import torch

from jobs import bundle as B
from jobs.images import InputError, augment_batch
from jobs.ingest import TEST, VAL, DataError
from jobs.pipeline import run_train
from jobs.spec import SpecError, validate_spec
from jobs.pipeline import prepare
from tests.conftest import ROOT
from tests.serving_fixtures import serve_instance  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("ray_session")


def image_spec(path, out, fmt="images", **data):
    return validate_spec({
        "name": "parts", "output": str(out),
        "data": {"path": str(path), "format": fmt, "label": "label", "image": {"size": [16, 16], "channels": 1},
                 "split": {"val": 0.2, "test": 0.2, "seed": 0}, **data},
        "model": {"kind": "cnn", "channels": [8], "hidden": [16], "dropout": 0.0},
        "train": {"epochs": 2, "batch_size": 16, "lr": 0.01, "workers": 1, "early_stop": None}})


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from defects import generate
    return generate(tmp_path_factory.mktemp("parts"), per_class=40, size=24, seed=3)


@pytest.fixture(scope="module")
def trained(parts, tmp_path_factory):
    out = tmp_path_factory.mktemp("parts-run")
    spec = image_spec(parts, out, augment={"hflip": True, "random_crop": 2})
    path, metrics = run_train(spec, progress=lambda *_: None)
    return spec, path, metrics


def test_folder_images_to_bundle(trained):
    spec, path, metrics = trained
    bundle = B.load(path)
    assert bundle.schema["input"] == "image" and bundle.schema["image"]["size"] == [16, 16]
    assert bundle.model_config["kind"] == "cnn" and bundle.model_config["input_shape"] == [1, 16, 16]
    assert set(metrics["test"]) >= {"accuracy", "f1", "auc", "confusion_matrix"}
    pre = json.loads((path / "preprocessor.json").read_text())
    assert pre["kind"] == "image" and len(pre["mean"]) == 1 and 0 < pre["mean"][0] < 1


def test_bundle_predicts_base64_and_pixels_and_reproduces_metrics(trained, parts):
    spec, path, metrics = trained
    bundle = B.load(path)
    from jobs.ingest import ingest  # noqa: F401  (the image path is behind prepare)
    prepared = prepare(spec, progress=lambda *_: None)
    test_rows = prepared.test_raw.to_pandas()
    records = [{"image": base64.b64encode(b).decode()} for b in test_rows["image"]]
    from jobs.evaluate import score
    recomputed = score(bundle, [pd.DataFrame({"image": [r["image"] for r in records],
                                              "label": test_rows["label"]})], "label")
    assert recomputed["confusion_matrix"] == metrics["test"]["confusion_matrix"]
    assert recomputed["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-12)
    from PIL import Image
    import io
    pixels = np.asarray(Image.open(io.BytesIO(test_rows["image"][0])).convert("L").resize((16, 16), Image.BILINEAR))
    by_b64 = bundle.predict(records[:1])
    by_pixels = bundle.predict([{"image": pixels.tolist()}])
    assert by_b64["predictions"] == by_pixels["predictions"]
    np.testing.assert_allclose(by_b64["probabilities"], by_pixels["probabilities"], atol=1e-6)


def test_bad_image_records_name_the_record(trained):
    bundle = B.load(trained[1])
    with pytest.raises(InputError) as err:
        bundle.predict([{"image": np.zeros((16, 16)).tolist()}, {"image": "!!not base64!!"},
                        {"image": base64.b64encode(b"not an image").decode()}, {"image": [[1, 2], [3, 4]]}, {}])
    text = str(err.value)
    assert "record 1: image: not valid base64" in text
    assert "record 2: image: cannot decode the image" in text
    assert "record 3: image: pixel array has shape [2, 2], expected [16, 16]" in text
    assert "record 4: image: missing" in text
    assert [p[0] for p in err.value.problems] == [1, 2, 3, 4]
    # A file's path in place of its bytes is said as such (it was "not valid base64").
    with pytest.raises(InputError, match=r"record 0: image: a file name or path, not the image: read the file and "
                                         r"send its bytes base64-encoded"):
        bundle.predict([{"image": "/data/line3/img_0042.PNG"}])
    # A grey pixel array for a colour model: the channels are not optional ("[32, 32] + [3] channels (height,
    # width[, channels])" read as if they were).
    from jobs.images import decode
    with pytest.raises(ValueError, match=r"^pixel array has shape \[32, 32\], expected \[32, 32, 3\] \(height, width, "
                                         r"channels: the model reads 3-channel images; an encoded image"):
        decode(np.zeros((32, 32)).tolist(), (32, 32), 3)


def test_parquet_bytes_input(tmp_path):
    from defects import generate
    generate(tmp_path / "pq", per_class=20, size=20, seed=5, parquet=True)
    prepared = prepare(image_spec(tmp_path / "pq", tmp_path / "out", fmt="parquet"), progress=lambda *_: None)
    assert prepared.ingest.rows_read == 40 and prepared.preprocessor.feature_dim == 256
    row = prepared.train_ds.take(1)[0]
    assert row["features"].shape == (256,) and row["features"].dtype == np.float32
    with pytest.raises(DataError, match=r"no column 'pixels'"):
        prepare(image_spec(tmp_path / "pq", tmp_path / "out", fmt="parquet", image={"column": "pixels"}),
                progress=lambda *_: None)
    # Rows without a label (null, blank) are left out and counted, as a table's are: one failed the split's
    # cut-offs with "boolean value of NA is ambiguous", a traceback after Ray's start.
    from jobs.images import ingest_images
    shard = sorted((tmp_path / "pq").glob("*.parquet"))[0]
    df = pd.read_parquet(shard)
    df["label"] = df["label"].astype(object)
    df.loc[0, "label"], df.loc[1, "label"] = None, " "
    df.to_parquet(shard)
    r = ingest_images(image_spec(tmp_path / "pq", tmp_path / "out", fmt="parquet").data, progress=lambda *_: None)
    assert (r.rows_read, r.rows_dropped_missing_label, len(r.dataset.to_pandas())) == (40, 2, 38)
    assert sum(sum(c.values()) for c in r.class_counts.values()) == 38


def test_a_table_of_images_split_by_part_keeps_each_parts_photos_together(tmp_path):
    """Two photos of each part (or scans of each patient) in a Parquet table: split by image, one photo of a part
    was trained on and the other tested, and the test split measured parts the model had seen."""
    from defects import generate

    from jobs.images import ingest_images

    generate(tmp_path / "pq", per_class=20, size=20, seed=5, parquet=True)
    part_of = {}
    for i, path in enumerate(sorted((tmp_path / "pq").glob("*.parquet"))):
        df = pd.read_parquet(path)
        df["part_id"] = [f"{i}-{k // 2}" for k in range(len(df))]   # photos 2k and 2k+1 of a shard: one part
        df.to_parquet(path)
        part_of.update(zip(df["image"], df["part_id"]))
    said = []
    spec = image_spec(tmp_path / "pq", tmp_path / "out", fmt="parquet", split={"by": "part_id", "val": 0.2, "test": 0.2})
    r = ingest_images(spec.data, progress=said.append)
    rows = r.dataset.to_pandas()
    assert "part_id" not in rows.columns and len(rows) == 40
    per_part = rows.assign(part=rows["image"].map(part_of)).groupby("part")["_split"].nunique()
    assert len(per_part) == 20 and per_part.max() == 1
    assert sum(r.split_how["groups"].values()) == 20 and r.summary()["split"]["by"] == "part_id"
    assert any(s.startswith("[ingest] split by 'part_id': 20 groups") for s in said)
    with pytest.raises(SpecError, match=r"split.by is for tables \(and a Parquet table of images, by a column of "
                                        r"it\); an image folder is split by a seeded hash of each image"):
        image_spec(tmp_path / "pq", tmp_path / "out", split={"by": "part_id"})


def test_corrupt_images_listed_then_fatal_over_threshold(tmp_path):
    from defects import generate
    root = generate(tmp_path / "parts", per_class=20, size=16, seed=1)
    (root / "ok" / "torn.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (root / "pit").mkdir()                                  # a class of two images, and one of none
    for f in sorted((root / "defect").glob("*.png"))[:2]:
        f.rename(root / "pit" / f.name)
    (root / "scratch").mkdir()
    (root / "stray_top.png").write_bytes((root / "ok" / "torn.png").read_bytes())   # beside the class folders
    lines = []
    prepared = prepare(image_spec(root, tmp_path / "out"), progress=lines.append)
    # ... said as such, not as a column "not listed in data.features".
    from jobs.pipeline import print_ingest_summary
    said = []
    print_ingest_summary(prepared, said.append)
    assert "\n[data] files outside the class folders, not used: stray_top.png\n" in "\n".join(said + [""]), said
    # Said as a table's classes are (neither was said of images before).
    assert f"[ingest] note: 1 folder(s) under {root} hold no image (.png, .jpg, .jpeg, .bmp, .gif, .webp, .tif, " \
           ".tiff), so they are no class: 'scratch'" in lines
    assert "[ingest] warning: class 'pit' has 2 row(s), none in the val and test splits: nothing measures how the " \
           "model does on it. Add rows of it, or leave those rows out if it is no class to predict" in lines
    assert [c["path"].endswith("torn.png") for c in prepared.ingest.corrupt] == [True]
    assert prepared.ingest.rows_read == 41 and sum(prepared.ingest.split_rows.values()) == 40
    # The split's rows add up in what is printed (it read "41 rows read, 0 dropped; split .../.../..." of 40).
    assert any(line.startswith("[prepare] 41 rows read, 0 dropped (no label), 1 undecodable skipped; split ")
               for line in lines), lines
    with pytest.raises(DataError, match=r"1 of 41 images cannot be decoded.*torn.png"):
        prepare(image_spec(root, tmp_path / "out", max_corrupt_fraction=0.0), progress=lambda *_: None)


def test_wrong_layouts(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match="no class subfolders"):
        prepare(image_spec(flat, tmp_path / "o"), progress=lambda *_: None)
    from defects import generate
    one = generate(tmp_path / "one", per_class=3, size=16)
    import shutil
    shutil.rmtree(one / "defect")
    with pytest.raises(DataError, match="single class folder"):
        prepare(image_spec(one, tmp_path / "o"), progress=lambda *_: None)
    # ... and before Ray starts (`validate`, `train`): validate said OK, train found it after a Ray start.
    from jobs import precheck
    for folder, words in ((flat, "no class subfolders"), (one, "single class folder")):
        with pytest.raises(DataError, match=words):
            precheck.check_columns(image_spec(folder, tmp_path / "o"))
    two = generate(tmp_path / "two", per_class=2, size=16)
    precheck.check_columns(image_spec(two, tmp_path / "o"))
    # Class folders written two ways ('defect/' and 'Defect/'): refused as a table's classes are (they trained as
    # two classes without a word).
    shutil.copytree(two / "defect", two / "Defect")
    with pytest.raises(DataError, match=r"class folders 'Defect' and 'defect' differ only in case or in spaces "
                                        r"around them, and would be trained as different classes: move"):
        precheck.check_columns(image_spec(two, tmp_path / "o"))
    with pytest.raises(SpecError, match=r"data.augment.random_crop \(40\) must be under the image's size 32x32 \(a "
                                        r"few pixels, e.g. 4\)"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y", "format": "images",
                                             "image": {"size": [32, 32]}, "augment": {"random_crop": 40}}})
    with pytest.raises(SpecError, match="model.kind cnn needs image data"):
        validate_spec({"name": "x", "data": {"path": "d", "label": "y"}, "model": {"kind": "cnn"}})


def test_augmentation_only_in_the_training_step(trained):
    spec, path, _ = trained
    prepared = prepare(spec, progress=lambda *_: None)
    pre = prepared.preprocessor
    # What val/test and serving see is the plain, deterministic transform of the raw image.
    val_raw = prepared.ingest.split(VAL).to_pandas()
    val_packed = prepared.val_ds.to_pandas()
    np.testing.assert_array_equal(np.stack(val_packed["features"].to_numpy()), pre.transform(val_raw))
    train_packed = np.stack(prepared.train_ds.to_pandas()["features"].to_numpy())
    train_raw = prepared.ingest.split(0).to_pandas()
    np.testing.assert_array_equal(train_packed, pre.transform(train_raw))   # stored un-augmented
    # The training step's augmentation moves pixels but keeps shape (and, for flips, the pixel multiset).
    x = torch.from_numpy(train_packed[:8])
    g = torch.Generator().manual_seed(0)
    flipped = augment_batch(x, pre.shape, hflip=True, crop=0, generator=g)
    assert flipped.shape == x.shape and not torch.equal(flipped, x)
    assert torch.equal(flipped.sort(dim=1).values, x.sort(dim=1).values)
    cropped = augment_batch(x, pre.shape, hflip=False, crop=2, generator=g)
    assert cropped.shape == x.shape and not torch.equal(cropped, x)
    from jobs.train import worker_config
    assert worker_config(spec, prepared, use_gpu=False).to_dict()["augment"] == {"shape": [1, 16, 16], "hflip": True,
                                                                       "random_crop": 2}


def test_served_image_model_over_http(trained, serve_instance, tmp_path, capsys):
    """images → bundle → served prediction: base64 and pixel arrays accepted and equal to bundle.predict; bad
    base64, undecodable images and wrong shapes are 4xx naming the record; OpenAPI describes the image."""
    from tests.serving_fixtures import call, deploy_app

    spec, path, _ = trained
    bundle = B.load(path)
    prepared = prepare(spec, progress=lambda *_: None)
    raw = prepared.test_raw.to_pandas()["image"].tolist()[:4]
    records = [{"image": base64.b64encode(b).decode()} for b in raw]
    served = deploy_app(path, "parts", serve_instance)
    url = served.url
    status, _, body = call(url, "POST", "/predict", json.dumps({"records": records}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200, body
    expected = bundle.predict(records)
    assert body["predictions"] == expected["predictions"]
    np.testing.assert_allclose(body["probabilities"], expected["probabilities"], atol=1e-6)
    pixels = {"image": np.zeros((16, 16), dtype=int).tolist()}
    status, _, body = call(url, "POST", "/predict", json.dumps({"records": [pixels]}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200 and len(body["predictions"]) == 1
    bad = [records[0], {"image": "%%%"}, {"image": base64.b64encode(b"no image").decode()},
           {"image": [[0, 1], [2, 3]]}, {}]
    status, _, body = call(url, "POST", "/predict", json.dumps({"records": bad}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 422, body
    where = {(e["record"], e["field"]) for e in body["errors"]}
    assert where == {(1, "image"), (2, "image"), (3, "image"), (4, "image")}
    text = json.dumps(body)
    assert "not valid base64" in text and "cannot decode" in text and "expected [16, 16]" in text
    status, _, doc = call(url, "GET", "/openapi.json")
    record = doc["components"]["schemas"]["Record"]
    assert record["properties"]["image"]["x-feature-type"] == "image" and "image" in record["required"]
    status, _, body = call(url, "POST", "/predict", json.dumps({"records": records[:1]}).encode(),
                           {"Content-Type": "application/json"})
    assert status == 200   # the replica kept serving after the bad request

    # `trainyard predict`'s reading: a folder of image files (class folders too), and a Parquet column of encoded
    # images as `train` reads one. Both were refused or a 422 ("not valid base64"); base64 text was the only way.
    from pathlib import Path

    from serving.client import Client
    from serving.tables import image_files, image_table, read_table
    client = Client(url)
    folder = sorted(p for p in Path(spec.data.path).iterdir() if p.is_dir())[0]
    files = image_table(image_files(folder), "image")
    assert len(files) == len([f for f in folder.iterdir() if f.suffix == ".png"])
    assert files["file"].iloc[0].endswith(".png")
    sent = [{"image": base64.b64encode(b).decode()} for b in files["image"]]
    assert client.predict_frame(files)["prediction"].tolist() == bundle.predict(sent)["predictions"]
    pd.DataFrame({"image": raw}).to_parquet(tmp_path / "images.parquet")
    table = read_table(tmp_path / "images.parquet")
    assert client.predict_frame(table)["prediction"].tolist() == expected["predictions"]
    # Predicted from a table, the output does not copy each image's bytes again, nor three always-empty notes.
    from trainyard.cli import main
    pd.DataFrame({"part": [f"P{i}" for i in range(len(raw))], "image": raw}).to_parquet(tmp_path / "parts.parquet")
    assert main(["predict", "--url", url, str(tmp_path / "parts.parquet"), "--out", str(tmp_path / "parts.csv")]) == 0
    written = pd.read_csv(tmp_path / "parts.csv")
    assert written["prediction"].tolist() == expected["predictions"] and written["part"].tolist()[0] == "P0"
    assert not {"image", "out_of_range", "unseen_categories", "imputed"} & set(written.columns), written.columns
    # A folder with an image that cannot be decoded and a file that is no image: the images that decode are
    # predicted (one broken file refused the whole folder), the broken one keeps its row with the reason, and is
    # named; the file left out is said (it was skipped without a word).
    import shutil

    from trainyard.cli import main
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in sorted(folder.glob("*.png"))[:2]:
        shutil.copy(f, mixed / f.name)
    (mixed / "zz-broken.png").write_bytes(b"not a png")
    from tests.test_serving_bodies import png_header_only
    (mixed / "zz-huge.png").write_bytes(png_header_only(5000, 5000))     # over the server's pixel limit
    (mixed / "notes.txt").write_text("shift log")
    assert main(["predict", "--url", url, str(mixed), "--out", str(tmp_path / "mixed.csv")]) == 0
    err = capsys.readouterr().err
    assert f"note: 1 file(s) under {mixed} are not images trainyard reads and were left out (e.g. " \
           f"{mixed / 'notes.txt'})" in err
    assert f"note: 2 of 4 image(s) under {mixed} cannot be decoded and were not sent; their rows say why in column " \
           f"'error' (e.g. {mixed / 'zz-broken.png'}: cannot decode the image" in err
    written = pd.read_csv(tmp_path / "mixed.csv", keep_default_na=False)
    assert written["file"].tolist() == [str(f) for f in sorted(mixed.glob("*.png"))]
    assert written["prediction"].tolist()[:2] == bundle.predict(
        [{"image": base64.b64encode(f.read_bytes()).decode()} for f in sorted(mixed.glob("*.png"))[:2]])["predictions"]
    assert written["prediction"][2] == "" and written["error"][2].startswith("cannot decode") and not written["error"][0]
    assert written["error"][3].startswith("the image is 5000x5000 = 25,000,000 pixels; the limit is")
    # The rows predicted are counted (4 were said "written" for 2 predicted), the log's key stays whole numbers
    # (0.0, 1.0), and a table's notes, always empty for images, are not columns.
    assert f"2 predictions from " in err and "written to" in err and ", with 2 row(s) of images not sent" in err
    assert written["record"].tolist()[:2] == ["0", "1"] and written["record"].tolist()[2:] == ["", ""]
    assert not {"out_of_range", "unseen_categories", "imputed"} & set(written.columns)
    (mixed / "aa-broken.png").write_bytes(b"")
    for f in sorted(mixed.glob("*.png")):
        if "broken" not in f.name:
            f.unlink()
    assert main(["predict", "--url", url, str(mixed)]) == 2          # nothing to send: said, with the files
    assert f"{mixed}: none of its 2 image(s) can be decoded: {mixed / 'aa-broken.png'}: " in capsys.readouterr().err


def test_tuning_an_image_classifier_works_unchanged(parts, tmp_path):
    """The same `tune` section on an image spec: trials train the CNN, the best becomes an image bundle."""
    from tuning import run_tune
    raw = image_spec(parts, tmp_path / "out").model_dump(mode="json")
    raw["train"]["epochs"] = 1
    raw["tune"] = {"search": "grid", "lr": {"choice": [0.01, 0.001]}, "batch_size": {"choice": [16]},
                   "scheduler": "none"}
    path, metrics = run_tune(validate_spec(raw), progress=lambda *_: None)
    bundle = B.load(path)
    assert bundle.schema["input"] == "image" and bundle.model_config["kind"] == "cnn"
    lineage = json.loads((path / "lineage.json").read_text())
    assert lineage["trial_id"] and lineage["tune"]["config"]["lr"] in (0.01, 0.001)
    assert "accuracy" in metrics["test"]


def test_evaluate_scores_an_image_model_on_class_folders_or_a_table(trained, parts, tmp_path, capsys):
    """`trainyard evaluate` on an image model (refused before): new images laid out as training reads them, one
    class folder alone, or a Parquet table; an undecodable file is left out and named, not fatal."""
    import shutil

    from defects import generate

    from jobs.evaluate import score
    from trainyard import cli

    _, path, _ = trained
    fresh = tmp_path / "fresh"
    shutil.copytree(parts, fresh)
    (fresh / "ok" / "broken.png").write_bytes(b"not a png")
    (fresh / "scratch").mkdir()                                    # a class not photographed yet: said
    files = sorted(f for f in fresh.rglob("*.png") if f.name != "broken.png")
    rows = pd.DataFrame({"image": [f.read_bytes() for f in files], "label": [f.parent.name for f in files]})
    expected = score(B.load(path), [rows], "label")
    assert cli.main(["evaluate", str(path), "--data", str(fresh)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"[evaluate] note: 1 folder(s) under {fresh} hold no image") and "'scratch'" in out[0]
    assert out[1].startswith(f"[evaluate] note: 1 of {len(rows) + 1} image(s) cannot be decoded and were left out: "
                             f"{fresh / 'ok' / 'broken.png'}: cannot decode"), out
    assert out[2] == f"[evaluate] {len(rows)} row(s) of {fresh} (label 'label')"
    accuracy = next(line for line in out if line.startswith("[evaluate] accuracy"))
    assert accuracy.split()[-1] == f"{expected['accuracy']:.4f}"

    only = tmp_path / "only"
    shutil.copytree(parts / "defect", only / "defect")             # one class folder: its recall
    assert cli.main(["evaluate", str(path), "--data", str(only)]) == 0
    out = capsys.readouterr().out.splitlines()
    recall = next(line for line in out if line.startswith("[evaluate] recall 'defect'"))
    assert recall.endswith("(40 rows)")

    table = generate(tmp_path / "table", per_class=6, size=24, seed=9, parquet=True, shards=1)
    assert cli.main(["evaluate", str(path), "--data", str(table / "part-000.parquet")]) == 0
    assert capsys.readouterr().out.startswith(f"[evaluate] 12 row(s) of {table / 'part-000.parquet'} (label 'label')")
    renamed = pd.read_parquet(table / "part-000.parquet").rename(columns={"image": "photo"})
    renamed.to_parquet(tmp_path / "renamed.parquet")
    assert cli.main(["evaluate", str(path), "--data", str(tmp_path / "renamed.parquet")]) == 2
    assert "no column 'image', the image the model reads" in capsys.readouterr().err


def test_one_picture_under_two_classes_is_said(tmp_path):
    """The same bytes under two class folders (a labelling slip) are said with both places; copies under one class
    are not."""
    import shutil
    from defects import generate
    root = generate(tmp_path / "parts", per_class=12, size=16, seed=2)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    first, second = classes[0], classes[1]
    twin = sorted((root / first).glob("*.png"))[0]
    shutil.copy(twin, root / second / "copy_of_it.png")
    shutil.copy(twin, root / first / "same_class_copy.png")
    lines = []
    prepare(image_spec(root, tmp_path / "out"), progress=lines.append)
    said = [line for line in lines if "more than one class" in line]
    assert len(said) == 1, lines
    assert said[0].startswith("[ingest] note: 1 image(s) are filed under more than one class, byte for byte the "
                              "same: "), said
    for place in (f"{first}/{twin.name} ({first})", f"{first}/same_class_copy.png ({first})",
                  f"{second}/copy_of_it.png ({second})"):
        assert place in said[0], said
