"""Downloads through a fake transport: checksums, atomic renames, clear network errors."""

import gzip
import hashlib
import io
import urllib.error
import urllib.request

import pytest

from resnets.data.download import DownloadError, cache_dir, download, search_dirs

URL = "https://example.org/files/data.bin"
PAYLOAD = bytes(range(256)) * 5000  # over one read chunk


def serve(data: bytes):
    calls = []

    def transport(url):
        calls.append(url)
        return io.BytesIO(data)

    transport.calls = calls
    return transport


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_a_download_is_checked_and_renamed_into_place(tmp_path, algorithm):
    transport = serve(PAYLOAD)
    digest = hashlib.new(algorithm, PAYLOAD).hexdigest()
    dest = download(URL, tmp_path / "sub" / "data.bin", transport=transport, **{algorithm: digest})
    assert dest.read_bytes() == PAYLOAD and transport.calls == [URL]
    assert leftovers(dest.parent) == []


def test_a_checksum_mismatch_deletes_the_file_and_names_both_digests(tmp_path):
    expected = hashlib.sha256(b"the real thing").hexdigest()
    actual = hashlib.sha256(PAYLOAD).hexdigest()
    with pytest.raises(ValueError, match=f"data.bin downloaded from {URL}: expected sha256 {expected}, got {actual}"):
        download(URL, tmp_path / "data.bin", sha256=expected, transport=serve(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_gunzip_stores_and_checks_the_decompressed_content(tmp_path):
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    dest = download(
        URL + ".gz", tmp_path / "data.bin", sha256=digest, transport=serve(gzip.compress(PAYLOAD)), gunzip=True
    )
    assert dest.read_bytes() == PAYLOAD


def test_a_truncated_gzip_stream_is_refused(tmp_path):
    truncated = gzip.compress(PAYLOAD)[:-100]
    with pytest.raises(ValueError, match="truncated download"):
        download(URL + ".gz", tmp_path / "data.bin", transport=serve(truncated), gunzip=True)
    assert list(tmp_path.iterdir()) == []


def test_a_network_failure_names_the_url_and_what_to_do(tmp_path):
    def offline(url):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(
        DownloadError, match=f"could not download {URL} \\(Name or service not known\\); pass --data-dir"
    ):
        download(URL, tmp_path / "data.bin", transport=offline, hint="pass --data-dir with the files")
    assert list(tmp_path.iterdir()) == []
    assert issubclass(DownloadError, ValueError) and issubclass(DownloadError, ConnectionError)  # the CLI's one line


def test_a_connection_lost_midway_leaves_no_partial_file(tmp_path):
    class Dropping(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise ConnectionResetError("connection reset by peer")
            return super().read(size)

    with pytest.raises(DownloadError, match="connection reset by peer"):
        download(URL, tmp_path / "data.bin", transport=lambda url: Dropping(PAYLOAD))
    assert list(tmp_path.iterdir()) == []


def test_the_default_transport_is_urllib_with_a_timeout(tmp_path, monkeypatch):
    seen = {}

    def fake_urlopen(url, timeout=None):
        seen.update(url=url, timeout=timeout)
        return io.BytesIO(b"ok")

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    download(URL, tmp_path / "data.bin")
    assert seen["url"] == URL and seen["timeout"] > 0


def test_search_order_and_cache_come_from_the_arguments_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNETS_DATA", str(tmp_path / "shared"))
    monkeypatch.setenv("RESNETS_CACHE", str(tmp_path / "cache"))
    dirs = search_dirs("cifar10", None, (tmp_path / "system",))
    expected = ["shared", "shared/cifar10", "system", "cache/cifar10"]
    assert [str(d.relative_to(tmp_path)) for d in dirs] == expected
    # An explicit folder is the only place looked in: used or refused, never replaced.
    dirs = search_dirs("cifar10", tmp_path / "mine", (tmp_path / "system",))
    assert [str(d.relative_to(tmp_path)) for d in dirs] == ["mine", "mine/cifar10"]
    assert cache_dir("cifar10") == tmp_path / "cache" / "cifar10"
