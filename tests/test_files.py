"""Tests of core.files: one writer per output (flock), dead writers' temp files."""

from __future__ import annotations

import logging
import subprocess
import sys
from contextlib import contextmanager

import pytest
from bad_input import SIM, error_line, train

from specscale.cli import main

# ---------------------------------------------------------------- concurrent writers
HOLDER = """
import sys, time
from specscale.core.files import writer_lock
with writer_lock(sys.argv[1]):
    print("ready", flush=True)
    time.sleep(120)
"""


@contextmanager
def holder_of(target):
    """A process holding the writer lock of ``target`` until the block ends (then SIGKILLed)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(target)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.wait(30)
            pytest.fail(f"lock holder did not start: {proc.stderr.read()}")
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def test_file_system_without_flock_writes_unlocked_with_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    from specscale.core import files

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    with caplog.at_level(logging.WARNING), files.writer_lock(tmp_path / "x.h5"):
        pass
    assert "does not support flock" in caplog.text and not list(tmp_path.iterdir())


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_second_train_writer_fails_at_once_naming_the_holder(tiny_dataset, tmp_path, fast, capsys):
    from specscale.core.files import writer_lock

    out = tmp_path / "cell"
    with holder_of(out) as holder:
        assert train(tiny_dataset, out, config=fast) == 2
        err = error_line(capsys, "train")
        assert f"PID {holder.pid}" in err and str(out) in err
        assert not out.exists()
    # the holder was SIGKILLed: its lock file may stay, but it does not block the next writer
    with writer_lock(out):
        pass
    assert not list(tmp_path.glob("*.lock"))


def test_second_simulate_writer_fails_at_once_naming_the_holder(tmp_path, capsys):
    target = tmp_path / "x.h5"
    with holder_of(target) as holder:
        assert main(["simulate", "--out", str(target), *SIM]) == 2
        assert f"PID {holder.pid}" in error_line(capsys, "simulate")
    assert not target.exists()


def test_stale_temp_files_of_dead_writers_are_removed(tiny_dataset, tmp_path, fast, caplog):
    dead = dead_pid()
    target = tmp_path / "x.h5"
    stale, live = tmp_path / f"x.h5.tmp-{dead}", tmp_path / "x.h5.tmp-1"  # PID 1 is always alive
    stale.write_bytes(b"half a file"), live.write_bytes(b"someone else's")
    with caplog.at_level(logging.INFO):
        assert main(["simulate", "--out", str(target), *SIM]) == 0
    assert target.exists() and not stale.exists() and live.exists()
    assert str(stale) in caplog.text and str(live) in caplog.text
    out = tmp_path / "cell"
    (out / "work").mkdir(parents=True)
    old = [out / f"metrics.json.tmp-{dead}", out / f"predictions.h5.tmp-{dead}", out / "work" / f"ckpt.pt.tmp-{dead}"]
    for p in old:
        p.write_text("partial")
    assert train(tiny_dataset, out, config=fast) == 0
    assert not [p for p in old if p.exists()] and (out / "metrics.json").exists()
