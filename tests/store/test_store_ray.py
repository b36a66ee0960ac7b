"""The Ray engine of ``curriculum index`` builds the very store the local engine builds, on a
real local Ray with 2 CPUs."""

from __future__ import annotations

from pathlib import Path

import pytest

from curriculum.cli import main
from curriculum.store import StoreError, build_store

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024 * 1024)
    yield
    ray.shutdown()


def _files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(store.iterdir()) if p.is_file()}


def test_ray_engine_builds_the_same_store_as_the_local_engine(store_corpus, tmp_path,
                                                              local_ray) -> None:
    # A fitting head that ends inside a shard and batches that straddle shards: the Ray
    # results are regrouped into the local engine's batches.
    settings = {"fit_documents": 500, "batch_documents": 128}
    build_store(store_corpus.out_dir, store_corpus.probes_dir, tmp_path / "local",
                **settings).close()
    build_store(store_corpus.out_dir, store_corpus.probes_dir, tmp_path / "ray", engine="ray",
                **settings).close()
    local, distributed = _files(tmp_path / "local"), _files(tmp_path / "ray")
    assert sorted(local) == sorted(distributed) and len(local) > 10
    assert [name for name in local if local[name] != distributed[name]] == []


def test_index_command_with_ray(store_corpus, tmp_path, local_ray, capsys) -> None:
    code = main(["index", "--shards", str(store_corpus.out_dir), "--probes",
                 str(store_corpus.probes_dir), "--out", str(tmp_path / "cli"), "--engine", "ray"])
    assert code == 0 and "engine ray" in capsys.readouterr().out
    build_store(store_corpus.out_dir, store_corpus.probes_dir, tmp_path / "local").close()
    assert _files(tmp_path / "cli") == _files(tmp_path / "local")


def test_a_damaged_shard_fails_the_ray_build_with_its_path(store_corpus, tmp_path,
                                                           local_ray) -> None:
    shard = Path(sorted(store_corpus.out_dir.glob("shard-*.tar"))[1])
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for path in sorted(store_corpus.out_dir.glob("shard-*.tar")):
        data = path.read_bytes()
        (damaged / path.name).write_bytes(data[: len(data) // 2] if path == shard else data)
    with pytest.raises(StoreError, match=rf"{shard.name}: damaged shard"):
        build_store(str(damaged), store_corpus.probes_dir, tmp_path / "out", engine="ray")
