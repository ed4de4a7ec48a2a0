"""The console progress report shows each message and the fraction done."""

from sae_core.progress import console_report


def test_console_report_shows_message_and_fraction(capsys):
    report = console_report()
    report("training batch 1/4", 0.25)
    report("training batch 4/4", 1.0)
    err = capsys.readouterr().err
    assert "training batch 1/4:  25%" in err and "training batch 4/4: 100%" in err
