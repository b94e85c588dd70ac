"""Writes that fail (a full disk, an I/O error) end the command with exit 2 and one line naming the
file and the errno: no traceback, no segfault (HDF5 used to crash closing a file after a failed
write), no temporary file and nothing that looks finished. The real thing is a tmpfs of a few MB
(root only); the injected-error tests run everywhere."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml

from specscale.core import files
from specscale.core.files import WriteFailed, atomic_hdf5, atomic_write, write_json, write_netcdf

pytestmark = pytest.mark.slow  # full file systems for simulate, train and fisher

CLI = "import sys; from specscale.cli import main; sys.exit(main())"
FAST = {"models": {"ridge": {}}, "wandb": {"mode": "disabled"}}


def _mount_error() -> str | None:
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root (CI runs this as root)"
    if not Path("/proc/mounts").exists():
        return "no /proc/mounts: not Linux"
    return None


@pytest.fixture
def small_fs(tmp_path):
    """A 2 MiB tmpfs at tmp_path/fs, unmounted afterwards; skipped where mounting is not allowed."""
    why = _mount_error()
    if why:
        pytest.skip(why)
    mnt = tmp_path / "fs"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(mnt: Path, leave: int) -> None:
    """Fill ``mnt`` until about ``leave`` bytes are free (tmpfs counts whole pages)."""
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    (mnt / "filler").write_bytes(b"\0" * max(0, free - leave))


def specscale(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CLI, *map(str, argv)], capture_output=True, text=True, timeout=600)


def assert_one_line(proc, command: str, path: Path) -> None:
    """Exit 2, one error line naming ``path`` and ENOSPC; other stderr lines are log records."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith(("INFO ", "WARNING ", "DEBUG "))]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"specscale {command}: error: cannot write {path}"), errors
    assert "ENOSPC, errno 28" in errors[0]


def leftovers(mnt: Path) -> list[str]:
    return sorted(str(p.relative_to(mnt)) for p in mnt.rglob("*") if p.name != "filler" and p.is_file())


def test_simulate_on_a_full_disk(small_fs):
    out = small_fs / "data.h5"  # 300 + 100 + 100 spectra of 4096 pixels: ~8 MB, 2 MB free
    proc = specscale("simulate", "--out", out, "--n-train", 300, "--n-val", 100, "--n-test", 100, "--no-progress")
    assert_one_line(proc, "simulate", out)
    assert leftovers(small_fs) == []


def test_train_on_a_full_disk(tiny_dataset, small_fs, tmp_path):
    config = tmp_path / "fast.yaml"
    config.write_text(yaml.safe_dump(FAST))
    fill(small_fs, 8192)  # room for the lock, not for predictions.h5
    out = small_fs / "cell"
    argv = ["train", "ridge", "--data", tiny_dataset, "--noise", 1, "--mag", "21.5", "--n-train", 100]
    proc = specscale(*argv, "--seed", 1, "--out", out, "--threads", 1, "--config", config)
    assert_one_line(proc, "train", out / "predictions.h5")
    assert leftovers(small_fs) == []  # no predictions.h5, no metrics.json, no temporary file, no lock


def test_fisher_on_a_full_disk(tiny_dataset, small_fs):
    fill(small_fs, 4096)
    out = small_fs / "ceiling.nc"
    proc = specscale("fisher", "--data", tiny_dataset, "--noise", 1, "--mag", "21.5", "--stars", 5, "--out", out)
    assert_one_line(proc, "fisher", out)
    assert leftovers(small_fs) == []


# ---------------------------------------------------------------- injected errors (any user)


class FullAfter:
    """A raw file whose writes fail with ENOSPC once ``budget`` bytes are written."""

    def __init__(self, raw, budget: int):
        self.raw, self.budget = raw, budget

    def write(self, data) -> int:
        if self.budget < len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.budget -= len(data)
        return self.raw.write(data)

    def __getattr__(self, name):
        return getattr(self.raw, name)


@pytest.fixture
def disk_full_after(monkeypatch):
    """HDF5 outputs whose file system fills up after ``budget`` bytes."""

    def install(budget: int):
        init = files.HDF5Sink.__init__

        def full_init(self, path):
            init(self, path)
            self.raw = FullAfter(self.raw, budget)

        monkeypatch.setattr(files.HDF5Sink, "__init__", full_init)

    return install


@pytest.mark.parametrize("budget", [0, 100, 5000, 200_000])
def test_hdf5_write_failure_is_one_error_and_leaves_nothing(tmp_path, disk_full_after, budget):
    disk_full_after(budget)
    path = tmp_path / "x.h5"
    with pytest.raises(WriteFailed) as exc, atomic_hdf5(path) as f:
        f["a"] = np.zeros((100, 1000))
        f.attrs["b"] = "c"
    assert str(exc.value).startswith(f"cannot write {path}: No space left on device (ENOSPC, errno 28)")
    assert exc.value.errno == errno.ENOSPC and "\n" not in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_netcdf_write_failure(tmp_path, disk_full_after):
    disk_full_after(1000)
    path = tmp_path / "c.nc"
    with pytest.raises(WriteFailed, match="ENOSPC"):
        write_netcdf(xr.Dataset({"v": ("x", np.arange(1000.0))}), path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO, errno.EROFS, errno.EDQUOT])
def test_atomic_write_names_the_target_and_errno(tmp_path, code):
    path = tmp_path / "m.json"
    with pytest.raises(WriteFailed) as exc, atomic_write(path) as tmp:
        tmp.write_text("partial")
        raise OSError(code, os.strerror(code))
    assert str(exc.value).startswith(f"cannot write {path}: {os.strerror(code)} ({errno.errorcode[code]}")
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_write(tmp_path / "m.json"):
        raise FileNotFoundError(errno.ENOENT, "no such input", "in.h5")


def test_successful_hdf5_and_json_writes_are_readable(tmp_path):
    with atomic_hdf5(tmp_path / "x.h5") as f:
        f["a"] = np.arange(10)
    import h5py

    with h5py.File(tmp_path / "x.h5") as f:
        np.testing.assert_array_equal(f["a"][:], np.arange(10))
    write_json({"a": 1.5}, tmp_path / "m.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "x.h5"]


def test_read_only_place_is_one_line(tmp_path, capsys):
    from specscale.cli import main

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    assert main(["simulate", "--out", str(ro / "x.h5"), "--n-train", "5", "--n-val", "5", "--n-test", "5"]) == 2
    assert "Traceback" not in capsys.readouterr().err
