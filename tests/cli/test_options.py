"""``--option key=value`` parsing."""

import pytest

from xaikit.cli.options import parse_options
from xaikit.errors import XaikitError


def test_values_stay_text_until_their_type_is_known_and_read_as_json_without_one():
    parsed = parse_options(["k=3", "layers=[8, 9]", "squash=true", "model=facebook/dinov2-base", "ratio=0.5", "empty="])
    assert parsed == {"k": "3", "layers": "[8, 9]", "squash": "true", "model": "facebook/dinov2-base", "ratio": "0.5", "empty": ""}
    assert {key: value.parsed() for key, value in parsed.items()} == {
        "k": 3, "layers": [8, 9], "squash": True, "model": "facebook/dinov2-base", "ratio": 0.5, "empty": "",
    }
    assert parse_options(["args={\"depth\": 2}"])["args"].parsed() == {"depth": 2}


@pytest.mark.parametrize(("pairs", "message"), [(["k"], "'k' is not key=value"), (["=3"], "is not key=value"), (["k=1", "k=2"], "'k' is given twice")])
def test_malformed_options_are_refused(pairs, message):
    with pytest.raises(XaikitError, match=message):
        parse_options(pairs)
