"""Importing data and callbacks leaves matplotlib's backend alone; their plots still write PNGs."""

import textwrap

import pytest
from conftest import run_python

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_import_keeps_the_users_backend_and_plots_still_write_pngs(tmp_path):
    script = tmp_path / "check.py"
    script.write_text(textwrap.dedent("""
        import sys

        import matplotlib

        # The user's choice: not Agg, and (like a notebook's) needs no display.
        matplotlib.use("svg")
        import numpy as np

        import callbacks
        import data

        # The packages may load their modules on first use: load the plotting ones.
        from callbacks.report import TrainingReport, plot_curves  # noqa: F401
        from data.maps import plot_events

        print("AFTER IMPORT", matplotlib.get_backend())
        out = sys.argv[1]
        plot_curves([{"epoch": 1, "loss": 0.9, "val_loss": 0.8}], out + "/curves.png")
        mask = np.zeros((16, 24), np.int32)
        mask[4:8, 6:10] = 1
        plot_events(out + "/map.png", np.ones((16, 24)), mask, truth=mask)
        print("AFTER PLOTS", matplotlib.get_backend())
    """))
    proc = run_python([script, tmp_path])
    assert "AFTER IMPORT svg" in proc.stdout, proc.stdout
    assert "AFTER PLOTS svg" in proc.stdout, proc.stdout
    for name in ("curves.png", "map.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG_SIGNATURE, name
