"""Reading events files: headers, delimiters, order, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.movielens import DATA
from streamer.files.events_file import EventsFileError, read_events, write_events


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_canonical_csv_sorted_stably_by_time(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "e.csv",
        "user_id,video_id,value,timestamp\nu1,v1,3,20\nu2,v2,1.5,10\nu3,v3,2,20\nu4,v4,0,5\n",
    )
    ev = read_events(p)
    assert ev.user_ids.tolist() == ["u4", "u2", "u1", "u3"]  # ties keep file order
    assert ev.video_ids.tolist() == ["v4", "v2", "v1", "v3"]
    np.testing.assert_array_equal(ev.values, [0.0, 1.5, 3.0, 2.0])
    np.testing.assert_array_equal(ev.timestamps, [5, 10, 20, 20])


def test_recbole_header_and_tab(tmp_path: Path) -> None:
    p = _write(
        tmp_path,
        "ml.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n",
    )
    ev = read_events(p)
    assert ev.user_ids.tolist() == ["22", "196", "186"] and ev.video_ids.tolist()[0] == "377"
    np.testing.assert_array_equal(ev.values, [1, 3, 3])


def test_any_column_order_extra_columns_semicolons(tmp_path: Path) -> None:
    p = _write(tmp_path, "e.txt", "ts;device;minutes;video;user\n2;tv;4.5;a;x\n1;web;0.5;b;y\n")
    ev = read_events(p)
    assert ev.user_ids.tolist() == ["y", "x"] and ev.video_ids.tolist() == ["b", "a"]
    np.testing.assert_array_equal(ev.values, [0.5, 4.5])


def test_headerless_four_columns(tmp_path: Path) -> None:
    ev = read_events(_write(tmp_path, "e.tsv", "u1\tv1\t2\t9\nu2\tv2\t3\t8\n"))
    assert ev.user_ids.tolist() == ["u2", "u1"] and len(ev) == 2


def test_roundtrip_with_writer(tmp_path: Path) -> None:
    p = tmp_path / "w.tsv"
    write_events(p, ["a", "b"], ["x", "y"], np.array([1.25, 0.0]), np.array([5.0, 6.0]))
    assert p.read_text().splitlines()[0] == "user_id\tvideo_id\tvalue\ttimestamp"
    ev = read_events(p)
    assert ev.user_ids.tolist() == ["a", "b"] and ev.values.tolist() == [1.25, 0.0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "user_id,video_id,value,timestamp\nu,v,1,1\nu,v,abc,2\n",
            r"e.csv:3: value 'abc' is not a number",
        ),
        (
            "user_id,video_id,value,timestamp\nu,v,1,yesterday\n",
            r"e.csv:2: timestamp 'yesterday' is not a number",
        ),
        ("user_id,video_id,value,timestamp\nu,v,nan,1\n", r"e.csv:2: value 'nan' is not finite"),
        (
            "user_id,video_id,value,timestamp\nu,v,1,1\nu,v,2\n",
            r"e.csv:3: expected at least 4 columns, got 3",
        ),
        ("user_id,video_id,timestamp\nu,v,1\n", r"e.csv:1: missing column\(s\) value"),
        ("name,colour\nann,red\n", r"e.csv:1: no recognised header"),
        ("", r"e.csv: the file is empty"),
    ],
)
def test_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(EventsFileError, match=message):
        read_events(_write(tmp_path, "e.csv", text))


@pytest.mark.skipif(
    not (DATA / "ml-100k.inter").exists(), reason="MovieLens 100K not fetched (make data)"
)
def test_movielens_100k_loads() -> None:
    ev = read_events(DATA / "ml-100k.inter")
    assert len(ev) == 100_000 and len(set(ev.user_ids.tolist())) == 943
    assert len(set(ev.video_ids.tolist())) == 1682 and set(np.unique(ev.values)) == {1, 2, 3, 4, 5}
    assert (np.diff(ev.timestamps) >= 0).all()
