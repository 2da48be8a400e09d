"""Fuzz the document readers (JSONL and Parquet) with malformed lines and rows, wrong types and
nulls: they never hang, never raise, and every record read is either a valid Document or one
reported error (records in = documents out + errors), each error naming FILE:LINE / FILE:ROW."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stepcrawl.document import Document
from stepcrawl.io import read_documents, write_documents

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(scalars, lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(st.text(max_size=5), c, max_size=3)),
                           max_leaves=8)
good_record = st.fixed_dictionaries(
    {"text": st.text(min_size=0, max_size=40)},
    optional={"id": st.text(min_size=1, max_size=8), "lang": st.sampled_from(["en", "de", None]),
              "quality": st.dictionaries(st.sampled_from(["fineweb_quality", "n_words", "new_signal"]), st.floats(-1e6, 1e6), max_size=3),
              "meta": st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
              "spans": st.lists(st.fixed_dictionaries({"start": st.integers(-1, 2**64), "end": st.integers(0, 50),
                                                       "role": st.sampled_from(["user", "assistant"]), "loss": st.booleans()}), max_size=2),
              "cluster": st.integers(0, 100)},
)
# a record with one field of a wrong type (or null)
FIELDS = ["text", "id", "meta", "quality", "spans", "lang", "lang_score", "cluster", "warc_offset", "source", "metadata"]
wrong_record = st.builds(lambda rec, k, v: {**rec, k: v}, good_record, st.sampled_from(FIELDS), json_values)
json_line = st.one_of(good_record, wrong_record, json_values).map(lambda o: json.dumps(o).encode())
raw_line = st.one_of(
    json_line,
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b" ")),  # not JSON, maybe not UTF-8
    json_line.map(lambda b: b[: max(1, len(b) // 2)]),  # cut off
    st.just(b'{"text": "\\ud800 lone surrogate"}'),
    st.just(b"[" * 5000),  # deep nesting
)


def _check(path, expected_in: int) -> tuple[list[Document], list[str]]:
    errors: list[str] = []
    docs = list(read_documents(path, on_error=lambda e: errors.append(str(e))))
    assert len(docs) + len(errors) == expected_in
    for d in docs:
        assert isinstance(d.text, str) and isinstance(d.id, str) and d.id
        d.text.encode("utf-8")  # writable
        assert all(isinstance(v, float) for v in d.quality.values())
    for e in errors:
        assert e.startswith(str(path)) and re.match(re.escape(str(path)) + r"(:\d+)?: ", e), e
    write_documents(path.parent / "roundtrip.parquet", docs)  # whatever was read can be written
    return docs, errors


@pytest.mark.timeout(300)
@SETTINGS
@given(lines=st.lists(raw_line, max_size=25))
def test_jsonl_reader_never_raises_and_accounts_for_every_line(tmp_path_factory, lines):
    path = tmp_path_factory.mktemp("fuzz") / "docs.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    _check(path, sum(1 for x in path.read_bytes().split(b"\n") if x.strip()))


# Parquet: one Arrow type per column and file (a column cannot mix types), drawn from the
# types a foreign or damaged writer might have used; nulls anywhere.
COLUMN_TYPES = {
    "text": [pa.string(), pa.large_string(), pa.int64(), pa.list_(pa.string())],
    "id": [pa.string(), pa.int64(), pa.float64()],
    "meta": [pa.string(), pa.int64()],
    "quality": [pa.map_(pa.string(), pa.float64()), pa.struct([("fineweb_quality", pa.float64()), ("x", pa.float64())]), pa.string()],
    "spans": [pa.list_(pa.struct([("start", pa.int64()), ("end", pa.int64()), ("role", pa.string()), ("loss", pa.bool_())])),
              pa.list_(pa.struct([("start", pa.string())])), pa.string()],
    "lang_score": [pa.float64(), pa.string()],
    "cluster": [pa.int64(), pa.float64(), pa.string()],
}


def _value(t: pa.DataType, draw):
    if draw(st.integers(0, 4)) == 0:
        return None
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return draw(st.one_of(st.text(max_size=20), st.sampled_from(['{"a": 1}', "{bad json", "[1, 2]", ""])))
    if pa.types.is_integer(t):
        return draw(st.integers(-10, 10**6))
    if pa.types.is_floating(t):
        return draw(st.floats(allow_nan=True, allow_infinity=True))
    if pa.types.is_boolean(t):
        return draw(st.booleans())
    if pa.types.is_map(t):
        return draw(st.lists(st.tuples(st.text(max_size=5), st.one_of(st.none(), st.floats())), max_size=3))
    if pa.types.is_struct(t):
        return {f.name: _value(f.type, draw) for f in t}
    if pa.types.is_list(t):
        return [_value(t.value_type, draw) for _ in range(draw(st.integers(0, 2)))]
    raise AssertionError(t)


@st.composite
def parquet_tables(draw):
    types = {name: draw(st.sampled_from(choices)) for name, choices in COLUMN_TYPES.items() if draw(st.booleans()) or name == "text"}
    n = draw(st.integers(0, 20))
    rows = [{name: _value(t, draw) for name, t in types.items()} for _ in range(n)]
    return pa.Table.from_pylist(rows, schema=pa.schema(list(types.items())))


@pytest.mark.timeout(300)
@SETTINGS
@given(table=parquet_tables())
def test_parquet_reader_never_raises_and_accounts_for_every_row(tmp_path_factory, table):
    path = tmp_path_factory.mktemp("fuzz") / "docs.parquet"
    pq.write_table(table, path)
    docs, errors = _check(path, table.num_rows)
    assert all(re.match(re.escape(str(path)) + r":\d+: field ", e) for e in errors)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cut", [0, 10, 200, -8])
def test_a_damaged_parquet_file_is_one_error_and_costs_no_other_file(tmp_path, cut):
    good = tmp_path / "a.parquet"
    write_documents(good, [Document(id=str(i), text=f"doc {i}") for i in range(30)])
    data = good.read_bytes()
    bad = tmp_path / "b.parquet"
    bad.write_bytes(data[:cut] if cut >= 0 else data[:cut] + b"\0" * 8)
    errors: list[str] = []
    docs = list(read_documents(tmp_path, on_error=lambda e: errors.append(str(e))))
    assert len(docs) == 30 and len(errors) == 1 and errors[0].startswith(str(bad)) and "Parquet" in errors[0]
