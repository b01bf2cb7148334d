"""The media server's socket.io JSON (orjson, the standard library for what orjson refuses)."""

import json

import pytest

from media_server.jsoncodec import OrjsonCodec

pytestmark = pytest.mark.no_db


def test_cyrillic_goes_as_utf8_and_reads_back_the_same():
    message = {"id": 7, "body": "Здравствуйте, доктор!", "author_id": None}
    text = OrjsonCodec.dumps(message, separators=(",", ":"))
    assert "Здравствуйте" in text and "\\u" not in text
    assert OrjsonCodec.loads(text) == json.loads(text) == message


def test_what_orjson_refuses_goes_through_the_standard_library():
    # A lone surrogate (JSON's "\ud800") and NaN: the standard library reads them, so the
    # handler still answers bad_request instead of the packet failing to decode.
    assert OrjsonCodec.loads('{"body":"a\\ud800"}') == {"body": "a\ud800"}
    assert OrjsonCodec.loads("[NaN]")[0] != OrjsonCodec.loads("[NaN]")[0]
    assert json.loads(OrjsonCodec.dumps({"body": "a\ud800"})) == {"body": "a\ud800"}
    assert OrjsonCodec.dumps({1: "int key"}, separators=(",", ":")) == '{"1":"int key"}'
