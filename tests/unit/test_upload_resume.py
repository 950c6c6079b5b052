"""Upload resume arithmetic: which batches to (re)send after a partial upload.

The resume itself, against the real server (a lost answer, a kill mid-upload, a kill
while repairing), is in tests/labelstudio/test_upload_resume.py.
"""

from __future__ import annotations

from aldaemon.sync.versions import (
    batches,
    own_version_number,
    resume_position,
)


class TestResumeArithmetic:
    def test_batches_cover_every_position_once(self) -> None:
        """Batch cuts are contiguous and cover 0..n exactly."""
        assert [(0, 3), (3, 6), (6, 7)] == batches(7, 3)

    def test_batch_that_did_not_land_is_sent_again(self) -> None:
        """Server count equal to what was recorded: resume at the recorded position."""
        assert 3 == resume_position(uploaded_count=3, server_count=3, cuts=batches(7, 3))

    def test_batch_that_landed_is_skipped(self) -> None:
        """Server count one batch ahead: that batch landed, resume after it."""
        assert 6 == resume_position(uploaded_count=3, server_count=6, cuts=batches(7, 3))

    def test_unexplained_count_asks_for_a_listing(self) -> None:
        """A count matching neither case returns None (the caller lists predictions)."""
        assert resume_position(uploaded_count=3, server_count=5, cuts=batches(7, 3)) is None

    def test_own_version_names_are_recognised_by_prefix(self) -> None:
        """Only "<prefix>-v<n>" is ours; other names are not."""
        assert (4, None, None) == (
            own_version_number("aldaemon", "aldaemon-v4"),
            own_version_number("aldaemon", "other-v4"),
            own_version_number("aldaemon", "aldaemon-v4-copy"),
        )
