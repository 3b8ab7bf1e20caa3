"""The dataset check: found/missing, counts, bad image files, the report text and progress."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.helpers.fake_data import make_all, make_fgvc_aircraft, make_imagenet, make_split_json_dataset, truncate
from workers.datasets import DATASETS
from workers.datasets.check import (
    check_datasets,
    format_report,
    has_problems,
    image_problem,
)
from workers.errors import DorBenchError, NotFoundError

ON_DISK = [n for n in DATASETS.names() if not DATASETS.get(n).builtin]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("DOR_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def by_name(reports):
    return {r.name: r for r in reports}


def test_all_datasets_found_and_counted(root):
    make_all(root, num_classes=4)
    reports = by_name(check_datasets(root, None, stream=None))
    assert sorted(reports) == ON_DISK and len(ON_DISK) == 15
    assert not has_problems(list(reports.values()))
    pets = reports["oxford_pets"]
    assert pets.found and pets.num_classes == 4 and (pets.num_base, pets.num_new) == (2, 2)
    assert pets.sizes == {"train": 12, "val": 8, "test": 8} and pets.images_checked == 28
    assert reports["imagenet"].sizes == {"train": 24, "val": 0, "test": 8}
    assert reports["imagenet_a"].num_classes == 3 and reports["imagenet_a"].sizes["test"] == 6
    assert reports["fgvc_aircraft"].sizes == {"train": 12, "val": 12, "test": 12}
    text = format_report(list(reports.values()))
    assert "15/15 datasets found, 0 with problems." in text
    assert "oxford_pets: ok" in text and "4 classes (2 base / 2 new)" in text
    assert "(val is drawn from train)" in text and "(test only)" in text


def test_missing_datasets_are_listed_but_not_problems_when_not_named(root):
    make_split_json_dataset(root, "eurosat", num_classes=3)
    reports = check_datasets(root, None, stream=None)
    missing = [r for r in reports if not r.found]
    assert len(missing) == 14 and not has_problems(reports)
    text = format_report(reports)
    assert f"dtd: not found: expected '{root / 'dtd'}'" in text
    assert "split_zhou_DescribableTextures.json" in text  # the expected layout
    assert "1/15 datasets found, 0 with problems." in text


def test_a_named_missing_dataset_is_a_problem(root):
    make_split_json_dataset(root, "eurosat", num_classes=3)
    reports = check_datasets(root, ["eurosat", "DTD"], stream=None)
    assert [r.name for r in reports] == ["eurosat", "dtd"]
    assert has_problems(reports) and reports[1].problem and not reports[0].problem
    assert f"dtd: MISSING: expected '{root / 'dtd'}'" in format_report(reports)


def test_bad_and_missing_images_are_named(root):
    folder = make_split_json_dataset(root, "oxford_pets", num_classes=3)
    truncated = folder / "images" / "c001" / "train_0.jpg"
    truncate(truncated)
    gone = folder / "images" / "c002" / "test_1.jpg"
    gone.unlink()
    (report,) = check_datasets(root, ["oxford_pets"], stream=None)
    assert report.problem and has_problems([report])
    reasons = dict(report.bad_files)
    assert set(reasons) == {str(truncated), str(gone)}
    assert reasons[str(gone)] == "missing" and reasons[str(truncated)].startswith("unreadable")
    text = format_report([report])
    assert "oxford_pets: 2 BAD FILE(S)" in text
    assert f"bad: {truncated} (unreadable" in text and f"bad: {gone} (missing)" in text


def test_many_bad_files_are_summarised(root):
    folder = make_fgvc_aircraft(root, num_classes=2, per_class=3)
    for path in sorted((folder / "images").iterdir())[:5]:
        path.write_bytes(b"not an image")
    (report,) = check_datasets(root, ["fgvc_aircraft"], stream=None)
    assert len(report.bad_files) == 5
    text = format_report([report], max_bad=2)
    assert text.count("  bad: ") == 2 and "... and 3 more bad files" in text


def test_a_malformed_dataset_is_reported_not_raised(root):
    folder = make_split_json_dataset(root, "food101", num_classes=2)
    (folder / "split_zhou_Food101.json").write_text(json.dumps({"train": []}))
    (report,) = check_datasets(root, ["food101"], stream=None)
    assert report.found and report.problem and "malformed" in report.error
    assert "food101: ERROR" in format_report([report])


def test_missing_root_and_unknown_or_builtin_names(tmp_path, root):
    with pytest.raises(NotFoundError, match="nowhere"):
        check_datasets(tmp_path / "nowhere", None, stream=None)
    with pytest.raises(NotFoundError, match="Did you mean 'imagenet_r'"):
        check_datasets(root, ["imagenet_rr"], stream=None)
    with pytest.raises(DorBenchError, match="'shapes' is built in"):
        check_datasets(root, ["shapes"], stream=None)


def test_fast_scans_stay_quiet(root):
    make_imagenet(root, num_classes=2, train=2, val=1)
    quiet = io.StringIO()
    check_datasets(root, ["imagenet"], stream=quiet)  # fast scans stay quiet
    assert quiet.getvalue() == ""


def test_image_problem(tmp_path):
    assert image_problem(str(tmp_path / "absent.jpg")) == "missing"
    (tmp_path / "text.jpg").write_text("hello")
    assert image_problem(str(tmp_path / "text.jpg")).startswith("unreadable")
