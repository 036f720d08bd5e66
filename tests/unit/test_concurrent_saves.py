"""Numbered saves never overwrite: concurrent writers with one prefix get distinct files that all load.

Two (and three) real processes, started with spawn as a second ComfyUI would be, save under the same
stem into one folder at the same time. Each file carries its writer and sequence number in its metadata,
so a file that another writer overwrote would show up as a missing (writer, sequence) pair.
"""
import multiprocessing
import os

import pytest
import torch

from comfyui_pas import PASCoordinates, edm_sigmas
from comfyui_pas.coords import save_numbered

SIGMAS = edm_sigmas(6, sigma_min=0.03, sigma_max=14.6, append_zero=True)


def coords_for(writer: int, sequence: int) -> PASCoordinates:
    return PASCoordinates(sigmas=SIGMAS, solver="euler", max_order=1, n_basis=2, steps=[2],
                          coordinates=torch.tensor([[writer, sequence]], dtype=torch.float64),
                          metadata={"writer": writer, "sequence": sequence})


def writer_process(folder: str, stem: str, writer: int, count: int, start, paths) -> None:
    torch.set_num_threads(1)
    start.wait()  # a barrier: every writer has imported torch and begins together
    for sequence in range(count):
        paths.put(save_numbered(coords_for(writer, sequence), folder, stem))


def run_writers(folder, stem, writers: int, count: int) -> list[str]:
    context = multiprocessing.get_context("spawn")
    start, paths = context.Barrier(writers, timeout=120), context.Queue()
    processes = [context.Process(target=writer_process, args=(str(folder), stem, w, count, start, paths))
                 for w in range(writers)]
    for process in processes:
        process.start()
    returned = [paths.get(timeout=120) for _ in range(writers * count)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return returned


@pytest.mark.parametrize("writers,count", [(2, 50), (3, 30)])
def test_concurrent_writers_with_one_prefix_lose_no_file(tmp_path, writers, count):
    (tmp_path / "PAS_00001.safetensors").write_bytes(b"an older file that must survive")
    returned = run_writers(tmp_path, "PAS", writers, count)

    assert len(set(returned)) == len(returned) == writers * count  # every save got its own name
    names = sorted(os.listdir(tmp_path))
    assert not [n for n in names if n.startswith(".pas-")]  # no temporary left behind
    saved = [n for n in names if n != "PAS_00001.safetensors"]
    assert sorted(os.path.basename(p) for p in returned) == saved
    assert (tmp_path / "PAS_00001.safetensors").read_bytes() == b"an older file that must survive"
    found = set()
    for name in saved:
        loaded = PASCoordinates.load(tmp_path / name)
        pair = (loaded.metadata["writer"], loaded.metadata["sequence"])
        assert loaded.coordinates.tolist() == [[float(pair[0]), float(pair[1])]]
        found.add(pair)
    lost = {(w, s) for w in range(writers) for s in range(count)} - found
    assert not lost, f"{len(lost)} saves were overwritten: {sorted(lost)[:10]}"


def test_exclusive_save_refuses_a_taken_name_and_cleans_up(tmp_path):
    target = tmp_path / "taken.safetensors"
    target.write_bytes(b"keep")
    with pytest.raises(FileExistsError):
        coords_for(0, 0).save(target, exclusive=True)
    assert target.read_bytes() == b"keep" and os.listdir(tmp_path) == ["taken.safetensors"]
    assert coords_for(0, 0).save(target).endswith("taken.safetensors")  # the default still replaces
    assert PASCoordinates.load(target).metadata == {"writer": 0, "sequence": 0}


def test_numbered_save_continues_after_the_highest_counter_and_keeps_the_file_mode(tmp_path):
    (tmp_path / "sd15_00007.safetensors").write_bytes(b"")
    (tmp_path / "sd15_x_00020.safetensors").write_bytes(b"")  # another stem does not count
    mask = os.umask(0o022)
    try:
        path = save_numbered(coords_for(1, 1), tmp_path / "sub", "sd15")
        assert os.path.basename(path) == "sd15_00001.safetensors"
        path = save_numbered(coords_for(1, 2), tmp_path, "sd15")
    finally:
        os.umask(mask)
    assert os.path.basename(path) == "sd15_00008.safetensors"
    assert os.stat(path).st_mode & 0o777 == 0o644
