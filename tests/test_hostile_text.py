"""Hostile structured text through the CLI (issue 10): YAML task and scoring files, baseline JSON,
loss expressions and labels that overflow. Each probe is exit 2 with one ``error:`` line, no
traceback and no warning text, quickly (no billion-laughs expansion, no recursion), and a message
that never echoes a long user text whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from lossctl.cli import app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _laughs(levels: int = 9) -> str:
    lines = ['  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefghijklm"[:levels]:
        lines.append(f"  {name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "report:\n" + "\n".join(lines) + f"\nlosses: *{prev}\n"


#: scoring files (--config): (name, text, a word the error must contain)
SCORING = [
    ("laughs", _laughs(), "aliases"),
    ("laughs_in_value", "chunk_size: " + _laughs().split("\n", 1)[1].replace("  a:", "{a:", 1)
     .replace("\n  ", ", ").replace("\nlosses:", "}\nlosses:"), "aliases"),
    ("tag_float", "chunk_size: !!float abc\n", "tag"),
    ("tag_int", "chunk_size: !!int zz\n", "tag"),
    ("tag_int_empty", "chunk_size: !!int ''\n", "tag"),
    ("tag_float_empty", "chunk_size: !!float\n", "tag"),
    ("bigint", "chunk_size: " + "9" * 400 + "\n", "number over"),
    ("deep", "losses: " + "[" * 500 + "]" * 500 + "\n", "nested"),
    ("python_tag", "losses: !!python/object/apply:os.system [echo hi]\n", "only plain YAML"),
]

#: task files (recommend)
TASKS = [
    ("task_list", "task: [regression]\n", "not one of"),
    ("task_map", "task: {a: 1}\n", "not one of"),
    ("task_bigint", "task: classification\nclasses: " + "9" * 400 + "\n", "number over"),
    ("task_tag", "task: regression\nminority_fraction: !!float abc\n", "tag"),
    ("task_laughs", _laughs().replace("report:", "data:").replace("losses:", "description:"), "aliases"),
]

#: baseline reports (--baseline)
BASELINES = [
    ("deep", "[" * 100_000 + "]" * 100_000, "nested"),
    ("dup_case", json.dumps({"schema_version": 1, "results": [{"loss": "mse", "value": 1e9},
                                                              {"loss": "MSE", "value": 0.0}]}), "different value"),
    ("dup_key", '{"schema_version": 1, "results": [{"loss": "mse", "value": 1e9, "value": 0.0}]}', "twice"),
    ("schema_0", json.dumps({"schema_version": 0, "results": [{"loss": "mse", "value": 1.0}]}), "schema_version 0"),
    ("schema_neg", json.dumps({"schema_version": -7, "results": [{"loss": "mse", "value": 1.0}]}), "schema_version -7"),
    ("bigint", '{"schema_version": 1, "results": [{"loss": "mse", "value": ' + "9" * 400 + "}]}", "number over"),
]

#: loss expressions (--loss)
EXPRESSIONS = [
    ("nested_list", "huber(delta=" + "[" * 1000 + "1" + "]" * 1000 + ")", "nested"),
    ("bigint_weight", "9" * 400 + "*mse", "too long"),
    ("bigint_param", "huber(delta=" + "9" * 400 + ")", "too long"),
    ("overflow_weight", "1e400*mse", "out of range"),
    ("overflow_param", "huber(delta=1e999)", "out of range"),
    ("long_name", "mse+" + "x" * 100_000, "unknown loss"),
    ("long_garbage", "mse+" + "#" * 100_000, "unexpected character"),
]


def _one_error(result, needle: str, limit: int = 3000) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr[:2000])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[:2000]
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    assert needle in result.stderr, (needle, result.stderr[:2000])
    assert len(result.stderr) < limit, len(result.stderr)  # long user text is cut, not echoed


@pytest.fixture
def arrays(tmp_path):
    p, t = tmp_path / "p.npy", tmp_path / "t.npy"
    np.save(p, np.linspace(0, 1, 50))
    np.save(t, np.linspace(1, 0, 50))
    return str(p), str(t)


def _timed(runner, args):
    start = time.monotonic()
    result = runner.invoke(app, args)
    assert time.monotonic() - start < 10, "a hostile text must be refused quickly"
    return result


@pytest.mark.parametrize("name,text,needle", SCORING, ids=[s[0] for s in SCORING])
def test_hostile_scoring_file(runner, tmp_path, arrays, name, text, needle):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    _one_error(_timed(runner, ["evaluate", *arrays, "--loss", "mse", "--config", str(path)]), needle)


@pytest.mark.parametrize("name,text,needle", TASKS, ids=[s[0] for s in TASKS])
def test_hostile_task_file(runner, tmp_path, name, text, needle):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    _one_error(_timed(runner, ["recommend", str(path)]), needle)


@pytest.mark.parametrize("name,text,needle", BASELINES, ids=[s[0] for s in BASELINES])
def test_hostile_baseline(runner, tmp_path, arrays, name, text, needle):
    path = tmp_path / f"{name}.json"
    path.write_text(text)
    _one_error(_timed(runner, ["evaluate", *arrays, "--loss", "mse", "--baseline", str(path)]), needle)


@pytest.mark.parametrize("name,text,needle", EXPRESSIONS, ids=[s[0] for s in EXPRESSIONS])
def test_hostile_expression(runner, arrays, name, text, needle):
    _one_error(_timed(runner, ["evaluate", *arrays, "--loss", text, "-f", "json"]), needle)


def test_same_loss_twice_with_one_value_is_still_a_baseline(runner, tmp_path, arrays):
    """lossctl itself writes `--loss mse --loss MSE` as two entries: such a report stays usable."""
    report = tmp_path / "r.json"
    first = runner.invoke(app, ["evaluate", *arrays, "--loss", "mse", "--loss", "MSE", "--output", str(report)])
    assert first.exit_code == 0, first.stderr
    again = runner.invoke(app, ["evaluate", *arrays, "--loss", "mse", "--baseline", str(report)])
    assert again.exit_code == 0, again.stderr


def test_overflowing_class_labels_warn_nothing_raw(tmp_path):
    """Labels of 1e300 for a classification loss: the error line only, no RuntimeWarning from pitfalls."""
    p, t = tmp_path / "p.npy", tmp_path / "t.npy"
    np.save(p, np.random.default_rng(0).random((40, 3)))
    np.save(t, np.full(40, 1e300))
    env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "lossctl", "evaluate", str(p), str(t), "--loss", "cross_entropy"],
                          capture_output=True, text=True, timeout=60, env=env, cwd=str(tmp_path))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr
    assert "Warning" not in proc.stderr


# ------------------------------------------------------------------------------ output files


def _snapshot(root) -> dict[str, tuple]:
    """Every entry under ``root``: (kind, size, mtime, link target) by relative path."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            out[os.path.relpath(full, root)] = (st.st_mode, st.st_size, st.st_mtime_ns,
                                                os.readlink(full) if os.path.islink(full) else None)
    return out


def _output_probes(tmp_path):
    """(name, option, path, needle) for output targets that must be refused before any work."""
    os.mkfifo(tmp_path / "fifo.json")
    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "dir.npy").mkdir()
    probes = [
        ("fifo_output", "--output", str(tmp_path / "fifo.json"), "not a regular file"),
        ("fifo_per_sample", "--per-sample", str(tmp_path / "fifo.npy"), "not a regular file"),
        ("dir_output", "--output", str(tmp_path / "dir.json"), "is a directory"),
        ("dir_per_sample", "--per-sample", str(tmp_path / "dir.npy"), "is a directory"),
        ("file_as_parent", "--output", str(tmp_path / "p.npy" / "x.json"), "ot a directory"),
    ]
    if os.path.exists("/dev/full"):
        probes.append(("device_output", "--output", "/dev/full", "not a regular file"))
    if os.path.isdir("/proc/self"):
        probes.append(("unwritable_dir", "--per-sample", "/proc/self/x.npy", "cannot write"))
    return probes


def test_hostile_output_targets(runner, tmp_path, arrays, monkeypatch):
    """Each refused with one error line before anything is computed (the loss is never called),
    and nothing in the directory changed."""
    probes = _output_probes(tmp_path)
    import lossctl.engine as engine

    def never(*args, **kwargs):  # pragma: no cover - reached only if the check comes too late
        raise AssertionError("computed before refusing the output path")

    monkeypatch.setattr(engine, "run", never)
    import lossctl.api as api

    monkeypatch.setattr(api, "run", never, raising=False)
    before = _snapshot(tmp_path)
    for name, opt, path, needle in probes:
        result = _timed(runner, ["evaluate", *arrays, "--loss", "mse", opt, path])
        _one_error(result, needle)
        assert _snapshot(tmp_path) == before, name


def test_output_symlink_writes_its_target_only(runner, tmp_path, arrays):
    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "real.json"
    real.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    ps_real = tmp_path / "reports" / "ps.npy"
    ps_link = tmp_path / "ps.npy"
    ps_link.symlink_to(ps_real)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["evaluate", *arrays, "--loss", "mse", "--output", str(link),
                                 "--per-sample", str(ps_link)])
    assert result.exit_code == 0, result.stderr
    after = _snapshot(tmp_path)
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    assert changed == {"reports/real.json", "reports/ps.npy", "reports"}
    assert link.is_symlink() and ps_link.is_symlink()
    assert json.loads(real.read_text())["passed"] is True
    assert np.load(ps_real).shape == (50,)


def test_per_sample_full_disk_is_exit_2_without_temp_file(runner, tmp_path, arrays, monkeypatch):
    import errno

    from lossctl import per_sample

    def full(self, values, index):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(per_sample.PerSampleSink, "_write", full)
    out = tmp_path / "ps.npy"
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["evaluate", *arrays, "--loss", "mse", "--per-sample", str(out)])
    _one_error(result, "No space left")
    assert _snapshot(tmp_path) == before


def test_output_full_disk_is_exit_2_without_temp_file(runner, tmp_path, arrays, monkeypatch):
    import errno

    real_replace = os.replace

    def full(src, dst):
        if str(src).endswith(".lossctl-tmp"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)  # pragma: no cover

    monkeypatch.setattr(os, "replace", full)
    before = _snapshot(tmp_path)
    result = runner.invoke(app, ["evaluate", *arrays, "--loss", "mse", "--output", str(tmp_path / "r.json")])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "No space left" in result.stderr
    assert _snapshot(tmp_path) == before


# ------------------------------------------------------------------------------ signals


@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGHUP", 129)])
def test_sigterm_sighup_like_ctrl_c(tmp_path, signame, code):
    """Killed mid-run: one error line, exit 128+N, and no per-sample file nor temporary file left."""
    import signal

    sig = getattr(signal, signame, None)
    if sig is None:  # pragma: no cover
        pytest.skip(f"no {signame}")
    n = 40_000_000
    for name in ("a.npy", "b.npy"):
        big = np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=np.float32, shape=(n,))
        big[:] = 0.5
        del big
    out = tmp_path / "ps.npy"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "lossctl", "evaluate", str(tmp_path / "a.npy"),
                             str(tmp_path / "b.npy"), "--loss", "log_cosh", "--per-sample", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    try:
        deadline = time.time() + 60

        def writing() -> bool:
            return any(os.path.exists(f) and os.path.getsize(f) > 0 for f in tmp_path.glob("*ps.npy*"))

        while not writing() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        if proc.poll() is not None:
            pytest.skip("the evaluation finished before the signal")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.communicate()
    assert (proc.returncode, stderr.strip(), stdout) == (code, f"error: terminated by {signame}", "")
    assert not list(tmp_path.glob("*ps.npy*"))


def test_long_user_text_in_a_scoring_file_is_cut(runner, tmp_path, arrays):
    """A 1 MB bad expression from a scoring file: the error line stays short."""
    path = tmp_path / "s.yaml"
    path.write_text("losses: ['mse+" + "y" * 900_000 + "']\n")
    _one_error(_timed(runner, ["evaluate", *arrays, "--config", str(path)]), "unknown loss")


def test_console_lines_are_capped(capsys):
    from lossctl import console

    console.error("x" * 1_000_000)
    console.warn("w" * 1_000_000)
    err = capsys.readouterr().err
    assert len(err) < 2 * console.MAX_MESSAGE + 100 and err.count("\n") == 2


def test_short_fuzz_of_structured_text():
    """A short seeded run of tests/fuzz_text.py (expressions, scoring and task YAML, baseline JSON):
    every failure a LossctlError, none slow. The long run: python tests/fuzz_text.py SEED SECONDS."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        import fuzz_text
    finally:
        sys.path.pop(0)
    counts, hangs, internal, examples = fuzz_text.run(seed=10, seconds=20, cases=6000)
    assert sum(counts.values()) > 1000
    assert not hangs and not internal, (dict(hangs), list(examples.values())[:3])


@pytest.mark.parametrize("which", ["task", "config", "baseline"])
def test_fifo_as_a_text_file_is_refused_not_waited_on(tmp_path, which):
    fifo = tmp_path / "f.yaml"
    os.mkfifo(fifo)
    p, t = tmp_path / "p.npy", tmp_path / "t.npy"
    np.save(p, np.zeros(5))
    np.save(t, np.zeros(5))
    args = {"task": ["recommend", str(fifo)],
            "config": ["evaluate", str(p), str(t), "--loss", "mse", "--config", str(fifo)],
            "baseline": ["evaluate", str(p), str(t), "--loss", "mse", "--baseline", str(fifo)]}[which]
    env = dict(os.environ, PYTHONPATH=ROOT)
    try:
        proc = subprocess.run([sys.executable, "-m", "lossctl", *args], capture_output=True, text=True,
                              timeout=30, env=env, cwd=str(tmp_path))
    except subprocess.TimeoutExpired:
        pytest.fail("lossctl waited on a FIFO")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "not a regular file" in proc.stderr
