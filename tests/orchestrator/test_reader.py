"""The settings reader: values and lines in one parse; what is not plain, reasonable data is refused."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from orchestrator.settings.reader import MAX_BYTES, MAX_VALUES, line_of, parse_value, read_yaml
from workers.errors import DorBenchError


def read(tmp_path: Path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return read_yaml(path, "Benchmark", "see examples/demo.yaml")


def test_values_are_plain_yaml_1_2_and_lines_point_at_them(tmp_path):
    data, lines = read(tmp_path, "name: x\nmethods:\n  - zeroshot\n  - name: coop\n    options: {lr: 2e-3, yes: on}\n")
    assert data == {"name": "x", "methods": ["zeroshot", {"name": "coop", "options": {"lr": 0.002, "yes": "on"}}]}
    assert type(data["methods"][1]["options"]["lr"]) is float  # not ruamel's ScalarFloat
    assert line_of(("methods", 1, "options", "lr"), lines) == 5
    assert line_of(("methods", 0, "name"), lines) == 3  # a short form's missing field: the item's line
    assert line_of(("data_root",), lines) == 1  # a missing key: the top level
    assert parse_value("[4, 8]", "x") == [4, 8] and parse_value("1e-3", "x") == 0.001


def test_duplicate_key_names_both_lines(tmp_path):
    with pytest.raises(DorBenchError, match=r"line 4, column 3: found the key 'lam' twice \(first on line 2\)"):
        read(tmp_path, "dor:\n  lam: 1\n  B: 2\n  lam: 3\n")


TAGGED = ["!!python/object/apply:os.system ['true']", "!!python/name:os.system", "!custom {a: 1}"]


@pytest.mark.parametrize("value", TAGGED)
def test_tags_are_refused_with_their_path(tmp_path, value):
    with pytest.raises(DorBenchError, match=r"uses the YAML tag .* at methods\[0\].options.lr; settings files hold"):
        read(tmp_path, f"methods:\n  - name: coop\n    options:\n      lr: {value}\n")


def test_alias_bomb_is_refused_quickly(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10^9 values
    start = time.perf_counter()
    with pytest.raises(DorBenchError, match=f"expands to more than {MAX_VALUES:,} values"):
        read(tmp_path, "\n".join(lines) + "\n")
    assert time.perf_counter() - start < 10


def test_a_file_too_big_to_be_settings_is_refused_before_parsing(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# comment\n" * (MAX_BYTES // 10 + 1))
    with pytest.raises(DorBenchError, match=r"big.yaml' is 1.0 MB; a settings file is at most 1 MB"):
        read_yaml(path, "Benchmark", "see examples/demo.yaml")
