"""The rough edges a new user hits (issue 14, SPEC §2 and §6): usage on a bare command, ``-h``, the
help text, terminals that cannot encode the output, plugin errors, ``--output`` files, the
per-sample CSV of 2-D values, and random flag combinations that must never become a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lossctl.cli import app

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("evaluate", "recommend", "losses", "explain")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONIOENCODING", "NO_COLOR", "FORCE_COLOR")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(3)
    p, t = tmp_path / "p.npy", tmp_path / "t.npy"
    np.save(p, rng.random(20))
    np.save(t, rng.random(20))
    return str(p), str(t)


# --- 1. a bare command prints its usage on stderr, exit 2; -h is --help ----------------------------

@pytest.mark.parametrize("args", [[], ["evaluate"], ["recommend"], ["explain"]])
def test_bare_command_prints_its_usage_on_stderr_with_exit_2(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Usage: "), result.stderr
    assert len(lines) > 8 and "Options:" in lines and "error:" not in result.stderr
    help_text = runner.invoke(app, [*args, "--help"]).stdout
    assert result.stderr == help_text  # the help, exactly as typer formats it


def test_bare_command_usage_in_a_real_process():
    proc = subprocess.run([sys.executable, "-m", "lossctl", "evaluate"], check=False, capture_output=True, text=True,
                          env=_env(), cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("Usage: lossctl evaluate [OPTIONS] [PREDS] [TARGETS]\n")
    assert "\nOptions:\n" in proc.stderr and "error:" not in proc.stderr
    assert proc.stderr.count("\n") > 10


@pytest.mark.parametrize("args", [[], *([c] for c in COMMANDS)])
def test_dash_h_is_help_everywhere(runner, args):
    short, long = runner.invoke(app, [*args, "-h"]), runner.invoke(app, [*args, "--help"])
    assert short.exit_code == long.exit_code == 0, short.stderr
    assert short.stdout == long.stdout and short.stdout.startswith("Usage: ")
    assert "-h, --help" in short.stdout


# --- 2. the help text --------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [[], *([c] for c in COMMANDS)])
def test_help_has_no_markup_escapes_and_lists_debug(runner, args):
    out = runner.invoke(app, [*args, "--help"]).stdout
    assert "\\[" not in out and "\\]" not in out, out
    assert "--debug" in out


def test_help_shows_required_and_defaults_plainly(runner):
    import re

    def plain(text: str, needle: str) -> bool:  # there, and not as typer's rich escape "\[..."
        return re.search(r"(?<!\\)" + re.escape(needle), text) is not None

    out = runner.invoke(app, ["recommend", "--help"]).stdout
    assert plain(out, "[required]") and plain(out, "[default: table]") and plain(out, "[default: 5]"), out
    assert plain(runner.invoke(app, ["losses", "--help"]).stdout, "[default: table]")
    assert plain(runner.invoke(app, ["explain", "--help"]).stdout, "[required]")


def test_evaluate_help_describes_the_input_forms(runner):
    out = " ".join(runner.invoke(app, ["evaluate", "--help"]).stdout.split())
    out = out[out.index("Arguments:"):]
    preds = out[out.index("[PREDS]"):out.index("[TARGETS]")]
    for form in ("p.npy", "f.npz:KEY", "f.csv:COL", "- reads stdin"):
        assert form in preds, (form, preds)
    targets = out[out.index("[TARGETS]"):out.index("Options:")]
    assert "stdin" in targets and "f.npz:KEY" in targets


def test_shell_completion_is_available(runner):
    out = runner.invoke(app, ["--help"]).stdout
    assert "--install-completion" in out and "--show-completion" in out
    script = runner.invoke(app, ["--show-completion", "bash"])
    assert script.exit_code == 0 and "_completion()" in script.stdout and "complete -o default" in script.stdout


def test_shell_completion_completes_commands_and_options():
    for words, cword, expected in (("lossctl ev", "1", "evaluate"), ("lossctl evaluate --nan", "2", "--nan-policy")):
        proc = subprocess.run([sys.executable, "-m", "lossctl"], check=False, capture_output=True, text=True,
                              env=_env(_LOSSCTL_COMPLETE="complete_bash", COMP_WORDS=words, COMP_CWORD=cword),
                              cwd=ROOT, timeout=60)
        assert proc.returncode == 0 and proc.stdout.split() == [expected], (words, proc.stdout, proc.stderr)


def test_subcommand_help_stays_lean():
    """typer escaped the help for rich, importing it (~65 ms) for every `recommend --help`."""
    code = ("import sys\nfrom lossctl.cli import app\n"
            "for args in (['recommend', '--help'], ['evaluate', '--help'], ['explain', '-h']):\n"
            "    try:\n        app(args)\n    except SystemExit:\n        pass\n"
            "heavy = [m for m in ('numpy', 'pandas', 'yaml', 'rich') if m in sys.modules]\n"
            "print(heavy, file=sys.stderr)\nsys.exit(1 if heavy else 0)\n")
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, env=_env(), cwd=ROOT,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr


# --- 3. terminals that cannot encode the output ---------------------------------------------------

def _run_all(jobs: dict[tuple[str, ...], tuple[list[str], str]], cwd: Path) -> dict:
    """Run the CLI jobs concurrently: {key: (args, encoding)} -> {key: CompletedProcess-like}."""
    procs = {key: subprocess.Popen([sys.executable, "-m", "lossctl", *args], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, env=_env(PYTHONIOENCODING=enc), cwd=cwd)
             for key, (args, enc) in jobs.items()}
    out = {}
    for key, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[key] = (proc.returncode, stdout, stderr)
    return out


ENCODINGS = ("ascii", "cp1252", "latin-1")


def test_every_evaluate_format_survives_a_narrow_terminal_encoding(tmp_path, pair):
    p, t = pair
    jobs = {}
    for fmt in ("table", "json", "csv", "markdown", "junit"):
        pretty = fmt in ("table", "markdown")  # the formats with ✓, ✗, ≤, — and box rules
        for enc in ENCODINGS if pretty else ENCODINGS[:2]:
            for gate in ("mse=10", "mse=0.001") if pretty else ("mse=0.001",):  # ✓ and ✗ in the report
                jobs[(fmt, enc, gate)] = (["evaluate", p, t, "--loss", "mse", "--loss", "huber(delta=0.5)",
                                           "--format", fmt, "--worst", "2", "--fail-above", gate], enc)
    for (fmt, enc, gate), (code, stdout, stderr) in _run_all(jobs, tmp_path).items():
        assert code == (0 if gate == "mse=10" else 1), (fmt, enc, stderr)
        assert b"Traceback" not in stderr and b"internal error" not in stderr, (fmt, enc, stderr)
        text = stdout.decode(enc)  # what the terminal shows: all of it in its encoding
        if enc == "ascii":
            assert text.isascii() and "?" not in text.replace("<?xml", "").replace("?>", ""), (fmt, text)
        if fmt == "json":
            assert json.loads(text)["passed"] is (gate == "mse=10")
        if fmt == "table" and enc == "ascii":
            assert ("ok <= 10" if gate == "mse=10" else "FAIL <= 0.001") in text and "+--" in text
        if fmt == "markdown" and enc == "ascii":
            assert ("ok all" if gate == "mse=10" else "x 1 of") in text, text


def test_recommend_losses_explain_survive_a_narrow_terminal_encoding(tmp_path):
    task = str(ROOT / "configs" / "tasks" / "binary_imbalanced.yaml")
    commands = {
        "recommend": ["recommend", task, "--explain"], "recommend-json": ["recommend", task, "-f", "json"],
        "losses": ["losses"], "losses-json": ["losses", "-f", "json"],
        "explain": ["explain", "focal"], "explain-json": ["explain", "focal", "-f", "json"],
        "explain-catalogue": ["explain", "tweedie"],
    }
    jobs = {(name, enc): (args, enc) for name, args in commands.items() for enc in ("ascii", "cp1252")}
    utf8 = _run_all({(name, "utf-8"): (args, "utf-8") for name, args in commands.items()}, tmp_path)
    for (name, enc), (code, stdout, stderr) in _run_all(jobs, tmp_path).items():
        assert code == 0, (name, enc, stderr)
        assert b"Traceback" not in stderr and b"internal error" not in stderr, (name, enc, stderr)
        text = stdout.decode(enc)
        if name.endswith("-json"):  # the same document, non-ASCII characters as \u escapes
            assert json.loads(text) == json.loads(utf8[(name, "utf-8")][1].decode()), (name, enc)
        if enc == "ascii":
            assert text.isascii()
    focal = _run_all({"x": (["explain", "focal"], "ascii")}, tmp_path)["x"][1].decode("ascii")
    assert "alpha" in focal or "gamma" in focal  # α, γ -> their names, not '?'


def test_ascii_equivalents():
    from lossctl.console import ascii_equivalent

    assert [ascii_equivalent(c) for c in "✓✗×≤≥—σé┃━┏"] == \
        ["ok", "x", "x", "<=", ">=", "--", "sigma", "e", "|", "-", "+"]
    assert ascii_equivalent("漢") == "?"


# --- 5. --output ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, check", [
    ("r.json", lambda s: json.loads(s)["schema_version"] == 1),
    ("r.md", lambda s: s.startswith("### lossctl evaluate")),
    ("r.markdown", lambda s: s.startswith("### lossctl evaluate")),
    ("r.xml", lambda s: s.startswith("<?xml") and "<testsuites" in s),
    ("r.csv", lambda s: s.splitlines()[0].startswith("loss,")),
    ("r.txt", lambda s: "mse" in s and not s.lstrip().startswith(("{", "#", "<"))),
])
def test_output_format_follows_the_extension(runner, pair, tmp_path, name, check):
    p, t = pair
    out = tmp_path / "new" / "dirs" / name  # missing parents are created
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "--output", str(out)])
    assert result.exit_code == 0, result.stderr
    assert check(out.read_text(encoding="utf-8")), out.read_text(encoding="utf-8")
    assert not result.stdout.lstrip().startswith(("{", "<?xml", "###"))  # stdout: the table
    assert sorted(os.listdir(out.parent)) == [name]  # no temporary file left


def test_explicit_format_wins_over_the_extension(runner, pair, tmp_path):
    p, t = pair
    out = tmp_path / "r.md"
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "-f", "json", "-o", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text()) == json.loads(result.stdout)


def test_output_temp_file_has_a_unique_name(runner, pair, tmp_path, monkeypatch):
    """A fixed `PATH.lossctl-tmp` made concurrent runs write into one file; a stale one broke the run."""
    p, t = pair
    out = tmp_path / "r.json"
    (tmp_path / "r.json.lossctl-tmp").mkdir()  # what another run (or a crashed one) left there
    import tempfile as tempfile_module

    made = []
    real = tempfile_module.mkstemp

    def spy(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tempfile_module, "mkstemp", spy)
    for _ in range(2):
        result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "-o", str(out)])
        assert result.exit_code == 0, result.stderr
        assert json.loads(out.read_text())["results"][0]["loss"] == "mse"
    names = [name for _, name in made]
    assert len(names) == 4 and len(set(names)) == 4  # (each run: the writability probe, then the report)
    assert all(os.path.dirname(n) == str(tmp_path) for n in names)  # same directory: rename is atomic
    assert sorted(os.listdir(tmp_path)) == ["p.npy", "r.json", "r.json.lossctl-tmp", "t.npy"]


def test_output_keeps_a_symlink_and_writes_devices_in_place(runner, pair, tmp_path):
    p, t = pair
    (tmp_path / "reports").mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(tmp_path / "reports" / "run1.json")
    assert runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "-o", str(link)]).exit_code == 0
    assert link.is_symlink() and json.loads((tmp_path / "reports" / "run1.json").read_text())["passed"]
    null = tmp_path / "null.json"
    null.symlink_to(os.devnull)
    assert runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "-o", str(null)]).exit_code == 0
    assert null.is_symlink() and os.readlink(null) == os.devnull


@pytest.mark.skipif(not os.path.exists("/proc/self/fd/1"), reason="needs /proc/self/fd")
def test_output_to_stdout_writes_to_stdout_once(pair, tmp_path):
    p, t = pair
    link = tmp_path / "so.json"
    link.symlink_to("/proc/self/fd/1")  # what /dev/stdout is
    proc = subprocess.run([sys.executable, "-m", "lossctl", "evaluate", p, t, "--loss", "mse", "-f", "json",
                           "-o", str(link)],
                          check=False, capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["passed"] is True  # one JSON document, nothing else
    assert link.is_symlink()


def test_output_that_cannot_be_written_is_a_usage_error(runner, pair, tmp_path):
    p, t = pair
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["evaluate", p, t, "--loss", "mse", "-o", str(blocker / "r.json")])
    assert result.exit_code == 2 and result.stderr.startswith(f"error: --output {blocker / 'r.json'}: ")


# --- 6. per-sample CSV of 2-D values -------------------------------------------------------------

def test_per_sample_csv_of_2d_values_is_rectangular(runner, tmp_path):
    rng = np.random.default_rng(0)
    preds, targets = rng.random((5, 3)), rng.random((5, 3))
    np.save(tmp_path / "p.npy", preds)
    np.save(tmp_path / "t.npy", targets)
    out = tmp_path / "ps.csv"
    result = runner.invoke(app, ["evaluate", str(tmp_path / "p.npy"), str(tmp_path / "t.npy"), "--loss", "mse",
                                 "--reduction", "none", "--per-sample", str(out), "--chunk-size", "2"])
    assert result.exit_code == 0, result.stderr
    rows = [line.split(",") for line in out.read_text().splitlines()]
    assert rows[0] == ["index", "value_0", "value_1", "value_2"]
    assert {len(r) for r in rows} == {4} and len(rows) == 6
    table = np.array(rows[1:], dtype=float)
    np.testing.assert_array_equal(table[:, 0], np.arange(5))
    np.testing.assert_allclose(table[:, 1:], (preds - targets) ** 2, rtol=1e-15)
    assert sorted(os.listdir(tmp_path)) == ["p.npy", "ps.csv", "t.npy"]


def test_per_sample_csv_header_names():
    from lossctl.per_sample import csv_header

    assert csv_header(()) == "index,value"
    assert csv_header((2,)) == "index,value_0,value_1"
    assert csv_header((2, 2)) == "index,value_0_0,value_0_1,value_1_0,value_1_1"


# --- 7. random flag combinations: exit 0, 1 or 2, never a traceback ---------------------------------

LOSSES = ["mse", "mae", "huber(delta=0.5)", "mse + 2*mae", "log_cosh", "bce", "cross_entropy", "dice",
          "kl_div", "hinge", "poisson_nll"]
#: valid values of each flag (each flag given or not, independently) ...
FLAGS = st.fixed_dictionaries({}, optional={
    "--reduction": st.sampled_from(["mean", "sum", "none"]),
    "--nan-policy": st.sampled_from(["raise", "omit", "propagate"]),
    "--format": st.sampled_from(["table", "json", "csv", "markdown", "junit"]),
    "--worst": st.sampled_from(["0", "2", "10"]),
    "--chunk-size": st.sampled_from(["1", "3", "100"]),
    "--hash": st.sampled_from(["xxh3", "sha256", "none"]),
    "--fail-above": st.sampled_from(["mse=0.1", "mae=1e9", "mse + 2*mae=0.5"]),
    "--max-increase": st.sampled_from(["5%", "0.1"]),
    "--per-sample": st.sampled_from(["ps.npy", "ps.csv"]),
    "--output": st.sampled_from(["out/r.json", "r.md", "r.xml", "r"]),
})
#: ... and now and then one bad value (a flag or a loss)
BAD = st.one_of(st.none(), st.none(), st.sampled_from([
    ("--reduction", "max"), ("--nan-policy", "ignore"), ("--format", "yaml"), ("--worst", "-1"), ("--worst", "x"),
    ("--chunk-size", "0"), ("--chunk-size", "-5"), ("--hash", "md5"), ("--fail-above", "nope=1"),
    ("--fail-above", "mse"), ("--fail-above", "=3"), ("--fail-above", "mse=nan"), ("--max-increase", "x%"),
    ("--per-sample", "ps.txt"), ("--per-sample", "missing/ps.npy"), ("--output", "."),
    ("--input", "anchor=p.npy"), ("--input", "bad"), ("--input", "x=missing.npy"),
    ("--loss", "huber(delta=-1)"), ("--loss", "nope"), ("--loss", "mse("),
]))
SWITCHES = st.lists(st.sampled_from(["--no-fail", "--strict", "--allow-missing"]), unique=True, max_size=3)
VALUES = st.one_of(st.floats(-3, 3, allow_nan=False), st.floats(0, 1), st.just(0.0), st.just(1.0))


@st.composite
def inputs(draw):
    n = draw(st.integers(1, 6))
    shape = draw(st.sampled_from([(n,), (n, 1), (n, 3)]))
    preds = np.array(draw(st.lists(VALUES, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    if draw(st.integers(0, 3)) == 0:  # a NaN now and then, for --nan-policy
        preds.flat[draw(st.integers(0, preds.size - 1))] = np.nan
    targets_kind = draw(st.sampled_from(["same", "same", "labels", "labels", "short"]))
    if targets_kind == "same":
        targets = np.array(draw(st.lists(VALUES, min_size=preds.size, max_size=preds.size))).reshape(shape)
    elif targets_kind == "labels":
        targets = np.array(draw(st.lists(st.integers(-1, 3), min_size=n, max_size=n)))
    else:
        targets = np.zeros(max(n - 1, 1))
    return preds.reshape(shape), targets


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(data=inputs(), losses=st.lists(st.sampled_from(LOSSES), min_size=1, max_size=2), flags=FLAGS, bad=BAD,
       switches=SWITCHES, baseline=st.booleans(), csv_input=st.booleans())
def test_random_flag_combinations_never_crash(runner, data, losses, flags, bad, switches, baseline, csv_input):
    preds, targets = data
    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            if csv_input:
                np.savetxt("p.csv", preds.reshape(len(preds), -1), delimiter=",")
                np.savetxt("t.csv", targets.reshape(len(targets), -1), delimiter=",")
                files = ["p.csv", "t.csv"]
            else:
                np.save("p.npy", preds)
                np.save("t.npy", targets)
                files = ["p.npy", "t.npy"]
            np.save("p.npy", preds)
            args = ["evaluate", *files]
            for loss in losses:
                args += ["--loss", loss]
            for flag, value in flags.items():
                args += [flag, value]
            args += switches
            if bad is not None:
                args += list(bad)
            if baseline or "--max-increase" in flags:
                Path("base.json").write_text(json.dumps({"schema_version": 1, "results": [
                    {"loss": "mse", "value": 0.5, "reduction": "mean"}]}))
                args += ["--baseline", "base.json"]
            result = runner.invoke(app, args)
        finally:
            os.chdir(cwd)
    event(f"exit {result.exit_code}")
    note = (args, result.exit_code, result.stdout[-500:], result.stderr[-1500:])
    assert result.exit_code in (0, 1, 2), note
    assert "Traceback" not in result.stdout + result.stderr, note
    assert "internal error" not in result.stderr, note
    if result.exit_code == 2:
        assert [line for line in result.stderr.splitlines() if line.startswith("error: ")], note
