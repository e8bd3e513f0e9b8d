"""Input digests in the report's provenance (SPEC §6): "ALGO:HEX", xxh3_128 by default, sha256 on
request, none skips them; each file hashed once; baselines compare digests of one algorithm only."""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import sys
import threading

import numpy as np
import pytest
from cli_support import assert_usage_error

import lossctl
from lossctl import provenance
from lossctl.cli import app
from lossctl.errors import InputError, UsageError
from lossctl.scoring_config import HASHES

XXH3 = re.compile(r"xxh3_128:[0-9a-f]{32}")


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(7)
    t = rng.normal(size=(200, 3))
    paths = {"p": tmp_path / "p.npy", "t": tmp_path / "t.npy", "t2": tmp_path / "t2.npy"}
    np.save(paths["p"], t + 0.1)
    np.save(paths["t"], t)
    np.save(paths["t2"], t * 1.5)
    return {k: str(v) for k, v in paths.items()}


def _json(runner, *args):
    result = runner.invoke(app, ["evaluate", *args, "--loss", "mse", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def _digests(report) -> dict[str, str | None]:
    return {name: info.get("digest") for name, info in report.provenance["inputs"].items()}


def test_default_digest_is_xxh3_128(runner, files):
    xxhash = pytest.importorskip("xxhash")
    doc = _json(runner, files["p"], files["t"])
    digest = doc["provenance"]["inputs"]["targets"]["digest"]
    assert XXH3.fullmatch(digest)
    with open(files["t"], "rb") as fh:
        assert digest == "xxh3_128:" + xxhash.xxh3_128(fh.read()).hexdigest()


def test_sha256_digest_is_the_files_sha256(runner, files):
    doc = _json(runner, files["p"], files["t"], "--hash", "sha256")
    for name, path in (("preds", files["p"]), ("targets", files["t"])):
        with open(path, "rb") as fh:
            assert doc["provenance"]["inputs"][name]["digest"] == "sha256:" + hashlib.sha256(fh.read()).hexdigest()


def test_hash_none_keeps_provenance_without_digests(runner, files):
    prov = _json(runner, files["p"], files["t"], "--hash", "none")["provenance"]
    assert {"python", "numpy", "lossctl", "time"} <= set(prov)
    assert prov["inputs"] == {"preds": {"path": files["p"]}, "targets": {"path": files["t"]}}


def test_same_content_same_digest_other_content_other_digest(files):
    first = _digests(lossctl.evaluate(files["p"], files["t"], "mse"))
    again = _digests(lossctl.evaluate(files["p"], files["t"], "mse"))
    other = _digests(lossctl.evaluate(files["p"], files["t2"], "mse"))
    assert first == again
    assert other["preds"] == first["preds"] and other["targets"] != first["targets"]


def test_npz_keys_share_one_digest_hashed_once(tmp_path, monkeypatch):
    path = tmp_path / "both.npz"
    np.savez(path, p=np.arange(50.0), t=np.arange(50.0) + 0.5)
    calls = []
    real = provenance._Job._file
    monkeypatch.setattr(provenance._Job, "_file", lambda self: calls.append(self.source) or real(self))
    digests = _digests(lossctl.evaluate(f"{path}:p", f"{path}:t", "mse", hash="sha256"))
    assert digests["preds"] == digests["targets"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(calls) == 1


def test_in_memory_arrays_hash_dtype_shape_and_bytes():
    a = np.arange(12.0)
    wide = _digests(lossctl.evaluate(a.reshape(3, 4), a.reshape(3, 4), "mse"))
    tall = _digests(lossctl.evaluate(a.reshape(4, 3), a.reshape(4, 3), "mse"))
    as_f32 = _digests(lossctl.evaluate(a.astype(np.float32).reshape(3, 4), a.reshape(3, 4), "mse"))
    assert XXH3.fullmatch(wide["preds"]) and wide["preds"] == wide["targets"]
    assert wide["preds"] != tall["preds"]  # the same bytes, read as another shape
    assert as_f32["preds"] != wide["preds"]
    strided = np.arange(24.0).reshape(3, 8)[:, ::2]  # not contiguous: hashed as its C-ordered copy
    assert _digests(lossctl.evaluate(strided, strided, "mse")) == \
        _digests(lossctl.evaluate(strided.copy(), strided.copy(), "mse"))


def test_inputs_are_never_memory_mapped(files, monkeypatch):
    """Digests and the chunked reads alike read .npy inputs with read/pread (a file cut while mapped
    is a SIGBUS, issue 10): with mmap refused everywhere the same digests and value come out."""
    expected = lossctl.evaluate(files["p"], files["t"], "mse")

    def refuse(*args, **kwargs):
        raise AssertionError("an input was memory-mapped")

    monkeypatch.setattr(mmap, "mmap", refuse)
    monkeypatch.setattr(np, "memmap", refuse)
    got = lossctl.evaluate(files["p"], files["t"], "mse")
    assert _digests(got) == _digests(expected)
    assert got.results[0].value == expected.results[0].value


def test_without_xxhash_the_default_falls_back_to_sha256(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "xxhash", None)  # import xxhash -> ImportError
    digests = _digests(lossctl.evaluate(files["p"], files["t"], "mse"))
    with open(files["t"], "rb") as fh:
        assert digests["targets"] == "sha256:" + hashlib.sha256(fh.read()).hexdigest()


def test_bad_hash_value_is_exit_2(runner, files):
    result = runner.invoke(app, ["evaluate", files["p"], files["t"], "--loss", "mse", "--hash", "md5"])
    assert_usage_error(result, "--hash", "xxh3, sha256, none", "'md5'")
    with pytest.raises(UsageError, match="xxh3, sha256, none"):
        lossctl.evaluate(files["p"], files["t"], "mse", hash="md5")


def test_provenance_false_still_skips_everything(files):
    assert lossctl.evaluate(files["p"], files["t"], "mse", provenance=False, hash="sha256").provenance == {}


def test_scoring_file_hash_key_and_the_flag_over_it(runner, files, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"inputs: {{preds: {files['p']}, targets: {files['t']}}}\nlosses: [mse]\nhash: sha256\n"
                   f"report: {{format: json}}\n")
    result = runner.invoke(app, ["evaluate", "--config", str(cfg)])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["provenance"]["inputs"]["preds"]["digest"].startswith("sha256:")
    result = runner.invoke(app, ["evaluate", "--config", str(cfg), "--hash", "none"])
    assert "digest" not in json.loads(result.stdout)["provenance"]["inputs"]["preds"]
    cfg.write_text(f"inputs: {{preds: {files['p']}, targets: {files['t']}}}\nlosses: [mse]\nhash: md5\n")
    assert_usage_error(runner.invoke(app, ["evaluate", "--config", str(cfg)]), "hash", "xxh3, sha256, none")


def test_scoring_config_lists_the_same_algorithms():
    assert HASHES == provenance.ALGORITHMS


def _baseline(tmp_path, runner, files, targets_info):
    doc = _json(runner, files["p"], files["t"])
    doc["provenance"]["inputs"]["targets"] = {"path": files["t"], **targets_info}
    path = tmp_path / "base.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _differ_warned(runner, files, base, *flags) -> bool:
    result = runner.invoke(app, ["evaluate", files["p"], files["t"], "--loss", "mse", "--format", "json",
                                 "--baseline", base, *flags])
    assert result.exit_code == 0, result.stderr
    return "baseline_inputs_differ" in {w["code"] for w in json.loads(result.stdout)["warnings"]}


def test_baseline_digests_compared_only_for_the_same_algorithm(runner, files, tmp_path):
    with open(files["t"], "rb") as fh:
        sha = hashlib.sha256(fh.read()).hexdigest()
    other_sha = _baseline(tmp_path, runner, files, {"digest": "sha256:" + "0" * 64})
    assert not _differ_warned(runner, files, other_sha)  # xxh3 now, sha256 then: nothing to compare
    assert _differ_warned(runner, files, other_sha, "--hash", "sha256")
    other_xxh3 = _baseline(tmp_path, runner, files, {"digest": "xxh3_128:" + "0" * 32})
    assert _differ_warned(runner, files, other_xxh3)
    assert not _differ_warned(runner, files, other_xxh3, "--hash", "none")
    legacy_same = _baseline(tmp_path, runner, files, {"sha256": sha})  # a report from before "digest"
    assert not _differ_warned(runner, files, legacy_same, "--hash", "sha256")
    legacy_other = _baseline(tmp_path, runner, files, {"sha256": "1" * 64})
    assert _differ_warned(runner, files, legacy_other, "--hash", "sha256")
    assert not _differ_warned(runner, files, legacy_other)
    same = _baseline(tmp_path, runner, files, {})
    assert not _differ_warned(runner, files, same)


def test_hashing_stops_when_the_evaluation_fails(tmp_path, monkeypatch):
    p = np.arange(100.0)
    p[3] = np.nan
    cancelled = []
    real = provenance.Hashing.cancel
    monkeypatch.setattr(provenance.Hashing, "cancel", lambda self: cancelled.append(self) or real(self))
    with pytest.raises(InputError, match="NaN"):
        lossctl.evaluate(p, np.arange(100.0), "mse")
    assert len(cancelled) == 1
    assert not [t for t in threading.enumerate() if t.name == "lossctl-hash"]


def _count_file_hashes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = provenance._Job._file
    monkeypatch.setattr(provenance._Job, "_file", lambda self: calls.append(self.source) or real(self))
    return calls


def _hash_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lossctl-hash"]


def test_cli_hashes_each_file_once_from_its_early_start(runner, files, monkeypatch):
    calls = _count_file_hashes(monkeypatch)
    doc = _json(runner, files["p"], files["t"])
    assert sorted(calls) == sorted(os.path.realpath(files[k]) for k in ("p", "t"))
    assert provenance._EARLY == {} and not _hash_threads()
    direct = _digests(lossctl.evaluate(files["p"], files["t"], "mse"))  # no early start in the API
    assert {k: v["digest"] for k, v in doc["provenance"]["inputs"].items()} == direct


def test_cli_table_output_hashes_nothing(runner, files, monkeypatch):
    calls = _count_file_hashes(monkeypatch)
    result = runner.invoke(app, ["evaluate", files["p"], files["t"], "--loss", "mse"])
    assert result.exit_code == 0 and calls == []


def test_early_hashes_stop_when_not_used_or_the_evaluation_fails(runner, files, tmp_path):
    close = provenance.prefetch([files["t2"], "missing.npy", None], "sha256")
    assert list(provenance._EARLY) == [("sha256", os.path.realpath(files["t2"]))]
    close()  # nothing adopted it
    assert provenance._EARLY == {} and not _hash_threads()
    bad = tmp_path / "nan.npy"
    np.save(bad, np.array([1.0, np.nan, 3.0]))
    result = runner.invoke(app, ["evaluate", str(bad), str(bad), "--loss", "mse", "--format", "json"])
    assert result.exit_code == 2 and "NaN" in result.stderr
    assert provenance._EARLY == {} and not _hash_threads()
    result = runner.invoke(app, ["evaluate", files["p"], files["t"], "--loss", "nosuch", "--format", "json"])
    assert result.exit_code == 2  # failed before any input was opened: the early hashes were never adopted
    assert provenance._EARLY == {} and not _hash_threads()
