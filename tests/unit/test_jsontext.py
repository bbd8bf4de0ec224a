"""The codec's JSON text helpers do what json.dumps/json.loads do, for every input."""

from __future__ import annotations

import json

import pytest

from fastapi_opinionated_eventbus._codec.jsontext import dumps, loads_untagged

SAME = [
    b'{"v":1,"args":[1,"x"],"kwargs":{}}',
    b'{"a": 1}  ',  # trailing whitespace: only json's decode() accepts it
    b'{"a":"\xc3\xa9\\ud800"}',  # non-ASCII and an escaped lone surrogate
    b'{"n":NaN,"i":-Infinity}',
    b' {"a":1}',  # leading whitespace: not the fast path
    b"[1,2]",
    b'"text"',
]
REFUSED = [b'{"a":1}{"b":2}', b'{"a":', b'{"a" 1}', b'{"', b"", b'{"a":1} x']


@pytest.mark.parametrize("raw", SAME)
def test_loads_untagged_reads_what_json_loads_reads(raw: bytes) -> None:
    assert repr(loads_untagged(raw)) == repr(json.loads(raw))


@pytest.mark.parametrize("raw", REFUSED)
def test_loads_untagged_refuses_what_json_loads_refuses(raw: bytes) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(raw)
    with pytest.raises(json.JSONDecodeError) as got:
        loads_untagged(raw)
    assert (got.value.msg, got.value.pos) == (expected.value.msg, expected.value.pos)


def test_dumps_writes_what_json_dumps_writes() -> None:
    body = {"v": 1, "args": ["é", 1.5, None, True, [1, {"k": "\n"}]], "kwargs": {"x": -0.0}}
    assert dumps(body) == json.dumps(body, separators=(",", ":"), ensure_ascii=False)
