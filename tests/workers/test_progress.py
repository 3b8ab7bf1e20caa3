"""Progress lines: counts, rate, note and ETA; quiet for short work; a line per interval in logs."""

import io

from workers.progress import Progress


def test_log_lines_show_counts_note_and_eta():
    stream = io.StringIO()
    progress = Progress(200, "checking imagenet", stream=stream, unit="images", interval=0)
    progress.set(50, "1 bad")
    line = stream.getvalue()
    assert line.startswith("checking imagenet: 50/200 images (")
    assert ", 1 bad, ETA " in line and line.endswith("s)\n")
    progress.update(150)
    assert stream.getvalue().splitlines()[-1].startswith("checking imagenet: 200/200 images")


def test_short_work_says_nothing_but_the_summary_only_when_slow():
    stream = io.StringIO()
    progress = Progress(10, "quick", stream=stream, delay=60)
    progress.update(10)
    progress.close("quick: done")
    assert stream.getvalue() == ""


def test_disabled_progress_is_silent():
    stream = io.StringIO()
    progress = Progress(3, "x", enabled=False, stream=stream, interval=0)
    progress.update(3)
    progress.close("summary")
    assert stream.getvalue() == ""
