import io

from pipeline.core.progress import progress


def test_plain_lines_when_not_a_tty_count_every_item_and_end_at_total():
    out = io.StringIO()
    assert list(progress(range(100), desc="users", stream=out, lines=4)) == list(range(100))
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["users: 25/100", "users: 50/100", "users: 75/100",
                                                     "users: 100/100"]
    assert lines[-1].endswith("ETA 0 s)")


def test_unknown_length_reports_each_item_without_eta():
    out = io.StringIO()
    assert list(progress(iter("abc"), desc="weeks", stream=out)) == ["a", "b", "c"]
    assert out.getvalue().splitlines()[-1].startswith("weeks: 3/? (")
    assert "ETA" not in out.getvalue()


def test_world_generation_reports_progress_per_day(tmp_path, capsys):
    from pipeline.ops.cli import main as cli

    assert cli(["--home", str(tmp_path), "world", "--users", "5", "--tracks", "50", "--artists", "10",
                "--days", "3"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" (")[0] for line in err] == [
        "world: days of history: 1/3", "world: days of history: 2/3", "world: days of history: 3/3",
        "world: landing files: 1/3", "world: landing files: 2/3", "world: landing files: 3/3"]
