"""When aldaemon touches its team views: keep, rewrite, recreate a deleted one, or find it."""

from __future__ import annotations

from aldaemon.sync.team_views import ViewStep, team_view_step, views_check_due


class TestTeamViewStep:
    def test_an_unchanged_list_of_a_view_not_listed_this_cycle_is_kept(self) -> None:
        """Between resyncs an unchanged view costs nothing."""
        assert ViewStep.KEEP == team_view_step(
            view_id=7, written=[1, 2], task_ids=[1, 2], listed_ids=None
        )

    def test_a_changed_list_is_rewritten_in_place(self) -> None:
        """A new list replaces the view's data under its stored id."""
        assert ViewStep.REWRITE == team_view_step(
            view_id=7, written=[1, 2], task_ids=[2], listed_ids={7, 8}
        )

    def test_a_view_missing_from_the_listing_is_recreated_even_when_unchanged(self) -> None:
        """A view a person deleted comes back, whatever its list."""
        assert ViewStep.RECREATE == team_view_step(
            view_id=7, written=[1, 2], task_ids=[1, 2], listed_ids={8}
        )

    def test_without_a_stored_id_the_view_is_found_by_title(self) -> None:
        """After a crash between creating and storing, the view is adopted, not doubled."""
        assert ViewStep.FIND == team_view_step(
            view_id=None, written=None, task_ids=[1], listed_ids=None
        )


class TestViewsCheckDue:
    def test_the_first_cycle_lists_the_views(self) -> None:
        """Never checked: check now."""
        assert views_check_due(last_resync_at=None, checked_at=None)

    def test_each_resync_brings_one_check(self) -> None:
        """A resync newer than the last check is due once; after the check it is not."""
        assert views_check_due(last_resync_at=200.0, checked_at=100.0)
        assert not views_check_due(last_resync_at=200.0, checked_at=200.0)
        assert not views_check_due(last_resync_at=None, checked_at=0.0)
