"""The fixture helpers' fast Ogg CRC agrees with the daemon's own, so derived files stay valid."""

from __future__ import annotations

import random

from daemon.audio import oggopus
from tests import fixtures_audio


def test_the_fast_page_crc_is_the_daemons() -> None:
    rng = random.Random(15)
    samples = [b"", b"OggS" + bytes(30), fixtures_audio.read_fixture("stereo.ogg")[:4000]]
    samples += [rng.randbytes(rng.randrange(1, 3000)) for _ in range(20)]
    for page in samples:
        padded = page + bytes(max(0, 27 - len(page)))
        assert fixtures_audio.page_crc(padded) == oggopus.page_crc(padded)
