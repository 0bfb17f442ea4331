"""The archive at scale: a write costs the same whatever the archive holds, object stores are written
by their own atomic upload in parts of a fixed size, a killed upload leaves nothing, each video is
decoded once, and the emulator can serve a real file of any size."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import fsspec
import pytest

from prefect_wan.archive.destination import ArchiveDestination
from prefect_wan.archive.store import Download, archive_stem, find_archived, publish, sha256_of
from tests.helpers import record_stub
from tests.test_flows import generate

MIB = 1 << 20


def download_of(path: Path) -> Download:
    with path.open("rb") as handle:
        return Download(path, path.stat().st_size, sha256_of(handle))


@pytest.fixture
def listings(monkeypatch):
    """Every directory the process scans (fsspec's local ls, glob and find all end in os.scandir)."""
    seen: list[str] = []
    real_scandir, real_listdir = os.scandir, os.listdir

    def scandir(path="."):
        seen.append(os.path.abspath(os.fspath(path)))
        return real_scandir(path)

    def listdir(path="."):
        seen.append(os.path.abspath(os.fspath(path)))
        return real_listdir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "listdir", listdir)
    return seen


def test_a_publish_into_a_full_archive_lists_no_folder_of_videos(tmp_path, listings):
    root = tmp_path / "archive"
    root.mkdir()
    for i in range(3000):
        (root / f"{i:032x}.mp4").write_bytes(b"v")
        (root / f"{i:032x}.json").write_bytes(b"{}")
    video = tmp_path / "video.mp4"
    video.write_bytes(os.urandom(MIB))
    destination = ArchiveDestination(url=str(root))
    for n in range(3):
        record = asyncio.run(publish(destination, download_of(video), record_stub, stem=f"{n:032x}-new", poster=b"png"))
        assert Path(record.video.path).read_bytes() == video.read_bytes() and record.poster is not None
    assert str(root) not in listings  # the videos' folder is never listed
    assert listings.count(str(root / ".partials")) <= 1  # abandoned partials: looked for once in the process
    assert [p.name for p in (root / ".partials").iterdir()] == []


def test_an_object_store_is_written_by_its_own_upload_in_parts(s3, tmp_path, monkeypatch):
    import s3fs

    bucket, storage = s3
    calls: list[str] = []
    real = s3fs.S3FileSystem._call_s3

    async def counting(self, method, *args, **kwargs):
        calls.append(method)
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    video = tmp_path / "video.mp4"
    video.write_bytes(os.urandom(23 * MIB))
    destination = ArchiveDestination(url=f"s3://{bucket}/videos", storage_options=storage, upload_part_mib=5)
    record = asyncio.run(publish(destination, download_of(video), record_stub, stem="a" * 32, poster=b"png"))
    fs = fsspec.filesystem("s3", **storage)
    assert hashlib.sha256(fs.cat_file(record.video.path)).hexdigest() == record.video.sha256
    assert calls.count("upload_part") == 5 and calls.count("complete_multipart_upload") == 1  # 23 MiB in 5 MiB parts
    assert "copy_object" not in calls and "delete_object" not in calls  # no partial moved into place
    assert not any(c.startswith("list_objects") for c in calls)


def test_an_upload_killed_half_way_leaves_no_object(s3, tmp_path):
    bucket, storage = s3
    video = tmp_path / "video.mp4"
    video.write_bytes(os.urandom(30 * MIB))
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        import s3fs
        from tests.helpers import record_stub
        from prefect_wan.archive.destination import ArchiveDestination
        from prefect_wan.archive.store import Download, publish
        real, parts = s3fs.S3FileSystem._call_s3, []
        async def dying(self, method, *args, **kwargs):
            if method == "upload_part":
                parts.append(1)
                if len(parts) == 3:
                    os.kill(os.getpid(), signal.SIGKILL)  # killed with two parts uploaded
            return await real(self, method, *args, **kwargs)
        s3fs.S3FileSystem._call_s3 = dying
        destination = ArchiveDestination(url="s3://{bucket}/videos", storage_options={storage!r}, upload_part_mib=5)
        asyncio.run(publish(destination, Download({str(video)!r}, {video.stat().st_size}, "x"), record_stub, stem="{"b" * 32}"))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120, cwd=str(Path(__file__).parent.parent))
    assert done.returncode == -9, done.stderr.decode()[-2000:]
    fs = fsspec.filesystem("s3", **storage)
    fs.invalidate_cache()
    assert fs.find(f"{bucket}/videos") == []  # no video, no partial, no sidecar


async def test_each_video_is_decoded_once_and_uploaded_while_it_is(prefect_harness, emulator, s3, monkeypatch):
    import av

    import prefect_wan.media.scan as scan

    bucket, storage = s3
    opened: list[str] = []
    real = av.open

    def counting(file, *args, **kwargs):
        if str(file).endswith("video.mp4"):
            opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(scan.av, "open", counting)
    video = await generate(emulator, 1801, f"s3://{bucket}/once", storage_options=storage)
    assert len(opened) == 1  # the probe and the poster come from one decode
    assert video.record.probe.frames == 150 and video.record.poster is not None


async def test_the_emulator_serves_a_given_video_file(prefect_harness, emulator, tmp_path):
    from prefect_wan.emulator.render import render_transition
    from tests.helpers import make_image

    given = render_transition(make_image(480, 640, (250, 250, 0)), make_image(480, 640, (0, 0, 250)), 480, 640, tmp_path / "given.mp4", seconds=2, fps=10)
    emulator.configure(video_file=str(given))
    video = await generate(emulator, 1802, str(tmp_path / "archive"))
    assert video.record.video.sha256 == hashlib.sha256(given.read_bytes()).hexdigest() and video.record.probe.frames == 20
    assert emulator.counters().renders == 0
    again = await find_archived(ArchiveDestination(url=str(tmp_path / "archive")), video.fingerprint, emulator.credentials().endpoint)
    assert again is not None and Path(again.video.path).name == f"{archive_stem(video.fingerprint, emulator.credentials().endpoint)}.mp4"
