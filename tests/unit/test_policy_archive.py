"""Policy archives: deterministic packing, safe reading, manifests, signed records, blobs."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from aiosd.policies.archive import pack_dir, pack_files, read_archive
from aiosd.policies.errors import PolicyArchiveError, PolicyConfigError
from aiosd.policies.store import build_record, split_uri, verify_record
from aiosd.specs.errors import SpecError
from federation.identity import NodeKey
from storage.blobs import BlobCorrupt, BlobNotFound, BlobStore

FN = b"class AIOSv1PolicyRule:\n    pass\n"


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in files.items():
            zf.writestr(n, d)
    return buf.getvalue()


def test_pack_dir_is_deterministic_and_accepts_a_bare_code_dir(tmp_path: Path) -> None:
    (tmp_path / "p" / "code").mkdir(parents=True)
    (tmp_path / "p" / "code" / "function.py").write_bytes(FN)
    (tmp_path / "p" / "code" / "__pycache__").mkdir()
    (tmp_path / "p" / "code" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    a = pack_dir(tmp_path / "p")
    assert a == pack_dir(tmp_path / "p")
    assert set(read_archive(a).files) == {"code/function.py"}
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "function.py").write_bytes(FN)
    (tmp_path / "bare" / "policy.json").write_bytes(b"{}")
    assert set(read_archive(pack_dir(tmp_path / "bare")).files) == {"code/function.py", "policy.json"}
    with pytest.raises(PolicyArchiveError, match="not a policy directory"):
        pack_dir(tmp_path)


@pytest.mark.parametrize("files", [{"code/function.py": FN}, {"wrap/code/function.py": FN}, {"function.py": FN}])
def test_zip_layouts_are_normalised(files: dict[str, bytes]) -> None:
    assert "code/function.py" in read_archive(_zip(files)).files


@pytest.mark.parametrize(("data", "match"), [
    (_zip({"../evil.py": b"x", "code/function.py": FN}), "not a safe relative path"),
    (_zip({"code/other.py": b"x"}), "has no code/function.py"),
    (b"not an archive at all", "neither a zip nor a tar"),
    (b"PK\x03\x04garbage", "not a readable zip"),
])
def test_bad_archives_are_refused_with_the_reason(data: bytes, match: str) -> None:
    with pytest.raises(PolicyArchiveError, match=match):
        read_archive(data)


def test_tar_links_are_refused() -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("code/function.py")
        info.type = tarfile.SYMTYPE
        info.linkname = "/root/node.key"
        tar.addfile(info)
    with pytest.raises(PolicyArchiveError, match="link or special file"):
        read_archive(buf.getvalue())


def test_record_is_signed_and_tampering_is_detected() -> None:
    key = NodeKey.generate()
    man = b'{"tags": "a,b", "parameters_schema": {"k": {"type": "integer"}}, "parameters": {"k": 1}}'
    data = pack_files({"code/function.py": FN, "policy.json": man})
    rec = build_record("my.policy:v1-beta", "0" * 64, len(data), read_archive(data), key)
    assert (rec.name, rec.version, rec.release_tag, rec.tags) == ("my.policy", "v1", "beta", ["a", "b"])
    assert rec.publisher == str(key.node_id)
    verify_record(rec)
    with pytest.raises(PolicyArchiveError, match="signature does not verify"):
        verify_record(rec.model_copy(update={"default_parameters": {"k": 2}}))
    with pytest.raises(PolicyArchiveError, match="does not match its hash"):
        verify_record(rec, data)


@pytest.mark.parametrize(("manifest", "error", "match"), [
    (b'{"parameters_schema": {"k": {"type": "integer"}}, "parameters": {"k": "x"}}', PolicyConfigError,
     "policy.json.parameters.k"),
    (b'{"input_schema": {"x": {"type": "nope"}}}', SpecError, "input_schema.x.type"),
    (b'{"colour": 1}', PolicyArchiveError, "policy.json.colour"),
    (b'[1]', PolicyArchiveError, "must be a JSON object"),
])
def test_bad_manifests_name_the_field(manifest: bytes, error: type[Exception], match: str) -> None:
    data = pack_files({"code/function.py": FN, "policy.json": manifest})
    with pytest.raises(error, match=match):
        build_record("my.policy:v1", "0" * 64, 1, read_archive(data), NodeKey.generate())


@pytest.mark.parametrize("uri", ["", "nocolon", ":v1", "a b:v1", "x:" + "v" * 300])
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(PolicyArchiveError, match="uri"):
        split_uri(uri)


def test_blob_store_roundtrip_and_corruption(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    d = blobs.put(b"hello")
    assert blobs.put(b"hello") == d and blobs.get(d) == b"hello" and blobs.size(d) == 5
    src = tmp_path / "f"
    src.write_bytes(b"x" * 3_000_000)
    assert blobs.get(blobs.put_file(src)) == src.read_bytes()
    assert sorted(blobs.digests()) == sorted([d, blobs.put_file(src)])
    blobs.path(d).write_bytes(b"hellx")
    with pytest.raises(BlobCorrupt):
        blobs.get(d)
    assert blobs.delete(d) and not blobs.has(d)
    with pytest.raises(BlobNotFound):
        blobs.get(d)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        blobs.get("../../etc/passwd")
