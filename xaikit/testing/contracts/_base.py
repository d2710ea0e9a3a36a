"""What every contract suite shares: the registration check and the default tiny inputs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

import pytest

import xaikit
from xaikit.testing.fixtures import tiny_samples
from xaikit.types import Sample


class ComponentContract:
    """Base of the contract suites: checks, when asked, that the plugin registers the component.

    Attributes:
        kind: the component kind (``"segmenter"``, ...), set by each suite.
        registered_name: the name your plugin registers the component under; when set,
            :meth:`test_registered_by_name` checks that ``xaikit plugins`` lists it with status
            ``ok`` and that ``xaikit.create`` builds it. Leave ``None`` to skip that check.
        registered_options: keyword options for that ``xaikit.create`` call.
    """

    kind: ClassVar[str]
    registered_name: ClassVar[str | None] = None
    registered_options: ClassVar[Mapping[str, Any]] = {}

    def _component(self, request: pytest.FixtureRequest) -> Any:
        """The component under test, through the suite's own fixture (named after its kind)."""
        return request.getfixturevalue(self.kind)

    def test_registered_by_name(self, request: pytest.FixtureRequest) -> None:
        """The plugin registers the component: listed with status ok, and built by name."""
        if self.registered_name is None:
            pytest.skip("set registered_name to check that the plugin registers this component")
        component = self._component(request)
        family = self.registered_name.partition(":")[0]
        listed = {info.name: info for info in xaikit.list_components(self.kind)}
        assert family in listed, f"{self.kind} '{family}' is not registered; is the plugin installed with its entry point?"
        assert listed[family].status == "ok", listed[family].error
        built = xaikit.create(self.kind, self.registered_name, **self.registered_options)
        assert isinstance(built, type(component)), f"'{self.registered_name}' builds a {type(built).__name__}, not a {type(component).__name__}"


def default_samples() -> list[Sample]:
    """Three tiny annotated samples of two sizes (64 x 64 and 48 x 80) and both classes."""
    return tiny_samples(2, 64) + tiny_samples(1, (48, 80), seed=1)


def assert_json(value: Any, what: str) -> None:
    """Fail unless ``value`` survives ``json.dumps``."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as error:
        pytest.fail(f"{what} is not JSON-serialisable: {error}")
