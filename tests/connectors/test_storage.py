"""fsspec profiles: in memory and on local files always, ADLS (abfs:// via adlfs) on Azurite."""

from __future__ import annotations

import io
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest
from servers import AZURITE_KEY, Azurite

from auto_workflow import connectors, flow, task
from auto_workflow.connectors import ProfileError
from auto_workflow.secrets import StaticMappingSecrets, set_secrets_provider
from conftest import need

# adlfs hands aiohttp blocks of several MB as bytes; aiohttp warns about that (a warning of
# theirs about their own event loop use, not a failure of the upload).
pytestmark = pytest.mark.filterwarnings("ignore:Sending a large body directly:ResourceWarning")


@pytest.fixture
def memory_lake() -> Any:
    need("fsspec")
    connectors.register_profile("lake", kind="fsspec", url=f"memory://lake-{uuid.uuid4().hex}")
    return connectors.get("lake")


@pytest.fixture
def file_lake(tmp_path: Path) -> Any:
    need("fsspec")
    connectors.register_profile("lake", kind="fsspec", url=(tmp_path / "lake").as_uri())
    return connectors.get("lake")


@pytest.fixture
def abfs_lake(azurite: Azurite) -> Any:
    need("adlfs")
    container = f"c{uuid.uuid4().hex[:12]}"
    set_secrets_provider(StaticMappingSecrets({"LAKE_CONN": azurite.connection_string}))
    connectors.register_profile(
        "seed", kind="fsspec", url=f"abfs://{container}", connection_string="secret://LAKE_CONN"
    )
    connectors.get("seed").fs.mkdir(container)
    connectors.register_profile(
        "lake",
        kind="fsspec",
        url=f"abfs://{container}/raw",
        connection_string="secret://LAKE_CONN",
    )
    return connectors.get("lake")


LAKES = ["memory_lake", "file_lake", "abfs_lake"]


def _lake(request: pytest.FixtureRequest, name: str) -> Any:
    return request.getfixturevalue(name)


@pytest.mark.parametrize("kind", LAKES)
def test_upload_download_list_exists_delete(request: pytest.FixtureRequest, kind: str) -> None:
    lake = _lake(request, kind)
    assert lake.upload("2024/orders.csv", b"id,amount\n1,9.5\n") == 16
    assert lake.upload("2024/notes.txt", "héllo") == len("héllo".encode())
    assert lake.upload("top.bin", io.BytesIO(b"\x00" * 3_000_000)) == 3_000_000
    assert lake.download("2024/orders.csv") == b"id,amount\n1,9.5\n"
    sink = io.BytesIO()
    assert lake.download("top.bin", sink) == 3_000_000
    assert lake.exists("2024/orders.csv")
    assert not lake.exists("2024/nothing.csv")
    assert lake.list() == ["2024", "top.bin"]
    assert lake.list("2024") == ["2024/notes.txt", "2024/orders.csv"]
    assert lake.list(recursive=True) == ["2024/notes.txt", "2024/orders.csv", "top.bin"]
    lake.delete("2024/notes.txt")
    lake.delete("2024/notes.txt")  # nothing there: no error
    assert lake.list("2024") == ["2024/orders.csv"]
    lake.delete("2024", recursive=True)
    assert lake.list(recursive=True) == ["top.bin"]
    with pytest.raises(FileNotFoundError):
        lake.download("2024/orders.csv")
    assert lake.list("missing") == []


@pytest.mark.parametrize("kind", LAKES)
def test_makedirs_and_the_full_url(request: pytest.FixtureRequest, kind: str) -> None:
    lake = _lake(request, kind)
    lake.makedirs("a/b")
    lake.upload("a/b/c.txt", b"x")
    assert lake.url("a/b/c.txt").endswith("/a/b/c.txt")
    assert lake.url("a/b/c.txt").split("://")[0] in ("memory", "file", "abfs")
    with lake.open("a/b/c.txt") as fh:
        assert fh.read() == b"x"


def test_paths_may_not_climb_out_of_the_root(memory_lake: Any) -> None:
    for bad in ("../other", "/etc/passwd", "a/../../b"):
        with pytest.raises(ValueError, match="stay below"):
            memory_lake.upload(bad, b"x")


def test_the_account_key_is_redacted_and_never_pickled(abfs_lake: Any, azurite: Azurite) -> None:
    abfs_lake.upload("k.txt", b"k")
    assert AZURITE_KEY not in repr(abfs_lake)
    assert "secret://LAKE_CONN" in repr(abfs_lake)
    assert AZURITE_KEY.encode() not in pickle.dumps(abfs_lake)
    assert pickle.loads(pickle.dumps(abfs_lake)) is abfs_lake
    from auto_workflow._history._values import redact

    assert AZURITE_KEY not in redact(f"error: {azurite.connection_string}")


def test_a_plain_credential_field_is_hidden_in_repr() -> None:
    need("fsspec")
    connectors.register_profile("s3ish", kind="fsspec", url="memory://x", secret="hunter2-xyz")
    assert "hunter2-xyz" not in repr(connectors.get("s3ish"))


def test_flow_tasks_move_a_file_between_lakes(abfs_lake: Any) -> None:
    abfs_lake.upload("in/data.csv", b"a,b\n1,2\n")

    @task
    def copy(name: str) -> int:
        data = connectors.get("lake").download(f"in/{name}")
        return int(connectors.get("scratch").upload(name, data))

    @flow
    def move(name: str) -> int:
        return copy(name)

    connectors.register_profile("scratch", kind="fsspec", url=f"memory://s-{uuid.uuid4().hex}")
    assert move.run("data.csv") == 8
    assert connectors.get("scratch").download("data.csv") == b"a,b\n1,2\n"


def test_an_unknown_protocol_is_a_clear_error() -> None:
    need("fsspec")
    connectors.register_profile("odd", kind="fsspec", url="nosuchproto://x")
    with pytest.raises(ValueError, match="nosuchproto"):
        connectors.get("odd").exists("a")


def test_a_missing_filesystem_names_the_extra() -> None:
    need("fsspec")
    try:
        import s3fs  # noqa: F401  # not in [dev]: its absence is what this test needs
    except ImportError:
        pass
    else:
        pytest.skip("s3fs is installed here")
    connectors.register_profile("bucket", kind="fsspec", url="s3://bucket/prefix")
    with pytest.raises(connectors.MissingExtraError, match=r"auto-workflow\[s3\]") as info:
        connectors.get("bucket").exists("x")
    assert isinstance(info.value, ImportError)


def test_a_bad_profile_field_is_named() -> None:
    with pytest.raises(ProfileError, match=r"'lake'.*needs the field 'url'"):
        connectors.register_profile("lake", kind="fsspec")
