"""xaikit.quiet through the command line: third-party output goes to the log, and ``--debug`` shows it on the terminal."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import xaikit
from xaikit import quiet
from xaikit.cli import main
from xaikit.interfaces import Segmenter
from xaikit.types import PartMap, Sample

NOISE = ("noise on stdout", "noise on stderr", "noise from a logger", "noise as a warning")


class NoisySegmenter(Segmenter):
    """A stand-in for research code: it prints, logs through its own console handler and warns while segmenting."""

    vocabulary = ("part",)

    def __init__(self) -> None:
        self.logger = logging.getLogger("noisy_research_code")
        self.logger.propagate = False
        self.logger.handlers = [logging.StreamHandler(sys.stderr)]  # as detectron2's setup_logger does

    def segment(self, samples: Sequence[Sample]) -> list[PartMap]:
        with quiet.captured("noisy: segment"):
            print(NOISE[0])
            print(NOISE[1], file=sys.stderr)
            self.logger.warning(NOISE[2])
            warnings.warn(NOISE[3], UserWarning, stacklevel=1)
        return [PartMap(torch.zeros(sample.size, dtype=torch.int64), {1: "part"}) for sample in samples]


@pytest.fixture
def noisy(tmp_path: Path) -> Iterator[Path]:
    """``noisy`` registered as a segmenter, and an image for ``xaikit segment``; the quiet default restored after."""
    plugin = SimpleNamespace()

    @xaikit.hookimpl
    def register_segmenters(register):
        register("noisy", NoisySegmenter, summary="Prints, logs and warns.")

    plugin.register_segmenters = register_segmenters
    xaikit.register_plugin(plugin, "noisy-plugin")
    image = tmp_path / "bird.png"
    Image.fromarray(np.full((24, 32, 3), 128, np.uint8)).save(image)
    yield image
    quiet.configure(verbose=False)


def test_third_party_output_goes_to_the_log_not_the_terminal(noisy, tmp_path, capsys):
    assert main(["segment", str(noisy), "--segmenter", "noisy", "--out", str(tmp_path / "overlay.png")]) == 0
    terminal = capsys.readouterr()
    assert not any(noise in terminal.out + terminal.err for noise in NOISE)
    log = quiet.log_path().read_text()
    assert "noisy: segment" in log and all(noise in log for noise in NOISE)


def test_debug_shows_third_party_output_on_the_terminal_and_logs_nothing(noisy, tmp_path, capsys):
    with pytest.warns(UserWarning, match=NOISE[3]):  # shown, not swallowed (pytest displays warnings itself)
        assert main(["--debug", "segment", str(noisy), "--segmenter", "noisy", "--out", str(tmp_path / "overlay.png")]) == 0
    terminal = capsys.readouterr()
    assert NOISE[0] in terminal.out
    assert NOISE[1] in terminal.err and NOISE[2] in terminal.err
    assert not quiet.log_path().exists()
