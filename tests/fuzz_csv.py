"""Seeded in-process fuzz (issue 10), not collected by pytest: the CSV reader (C parser and pandas
fallback) differentially against ``pandas.read_csv``, then the text targets of tests/fuzz_text.py
(expressions, scoring YAML, task YAML, baseline JSON), each for a fixed time.

    nice -n 19 python tests/fuzz_csv.py SEED SECONDS_PER_TARGET [TARGET ...]

A case is fine when it ends in a value or a LossctlError (exit 2's one ``error:`` line). An
*internal error* is any other exception; a *hang* is a case over the per-case timeout (SIGALRM);
a *disagreement* is a CSV column lossctl reads as numbers that pandas reads as other numbers
(or with another row count).
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_text

from lossctl.errors import LossctlError

CELLS = ["0", "1", "-1", "7", "42", "1.5", "-0.25", "1e3", "2.5E-3", "", " ", " 3 ", "nan", "NaN", "NA", "inf", "-inf",
         "true", "false", "abc", "1_000", "0x1f", "9" * 25, "1e400", "-0", "+4", ".5", "5.", "1,5", '"2"', '"a,b"',
         '"x\ny"', '"r\rq"', '""', '"', "é", "\x00", "1 2", "#", "3.14159265358979"]
ENDS = [b"\n", b"\r\n", b"\r"]
SEPS = [",", ",", ",", ";", "\t", "|"]


def gen_csv(rng: random.Random) -> tuple[bytes, str, bool]:
    """(file bytes, separator, whether it has a header): a mostly numeric table with hostile cells, line ends and blanks."""
    sep = rng.choice(SEPS)
    ncols = rng.randint(1, 5)
    end_mode = rng.random()
    numeric = rng.random() < 0.6  # numbers only (the C parser's path) or any cell
    header = rng.random() < 0.9
    lines = [sep.join(f"c{i}" for i in range(ncols))] if header else []
    for _ in range(rng.randint(0, 40 if rng.random() < 0.9 else 3000)):
        if numeric and rng.random() < 0.97:
            row = [str(rng.randint(-99, 99)) if rng.random() < 0.6 else repr(rng.uniform(-1e3, 1e3))
                   for _ in range(ncols)]
        else:
            row = [rng.choice(CELLS) for _ in range(ncols + (rng.random() < 0.05) - (rng.random() < 0.05))]
        lines.append(sep.join(row))
        if rng.random() < 0.05:
            lines.append("")
    out = []
    for line in lines:
        end = ENDS[0] if end_mode < 0.4 else ENDS[1] if end_mode < 0.5 else ENDS[2] if end_mode < 0.6 \
            else rng.choice(ENDS)
        out.append(line.encode("utf-8", errors="surrogatepass") + end)
    data = b"".join(out)
    if rng.random() < 0.3:
        data = data.rstrip(b"\r\n")
    if rng.random() < 0.05:
        data = b"\xef\xbb\xbf" + data
    if rng.random() < 0.1 and data:  # a byte-level mutation
        buf = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        data = bytes(buf)
    return data, sep, header


class Disagreement(Exception):
    pass


class PandasCrQuirk(Exception):
    """pandas reads the bare-CR file otherwise than the same text with LF line ends, and lossctl
    reads what pandas reads from the LF text (pandas 3.1's tokenizer: after a blank CR line, a row
    starting ``,"",`` loses a field; ``a,b,c\r\r,"",-0.25\r`` puts -0.25 under b)."""


def _pandas_cr_quirk(path: str, sep: str, header: bool, col: str, got: np.ndarray) -> bool:
    import io

    import pandas as pd

    from lossctl.readers.csv import _has_bare_cr, open_lf

    if not _has_bare_cr(path):
        return False
    with open_lf(path) as fh:
        text = fh.read()
    try:
        frame = pd.read_csv(io.BytesIO(text), sep=sep, header=0 if header else None)
    except Exception:  # noqa: BLE001
        return False
    frame.columns = [str(c) for c in frame.columns]
    if col not in frame.columns or frame[col].dtype.kind not in "iufb" or len(frame) != len(got):
        return False
    return bool(np.allclose(got.astype(float), frame[col].to_numpy(dtype=float), rtol=1e-12, atol=0, equal_nan=True))


def case_csv(rng: random.Random, folder: str, n: int) -> None:
    import pandas as pd

    from lossctl.readers import ReadOptions, open_input

    data, sep, header = gen_csv(rng)
    path = os.path.join(folder, f"f{n}.csv")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                frame = pd.read_csv(path, sep=sep, header=0 if header else None)
                frame.columns = [str(c) for c in frame.columns]
        except Exception:  # noqa: BLE001 - pandas refuses: lossctl need only refuse cleanly
            frame = None
        opts = ReadOptions(delimiter=sep if sep != "," else None, header="yes" if header else "no")
        cols = list(frame.columns) if frame is not None else ["0"]
        for col in cols:
            try:
                got = open_input(f"{path}:{col}", "preds", opts).read_all()
            except LossctlError:
                continue
            if frame is None or col not in frame.columns:
                continue
            want = frame[col]
            if want.dtype.kind not in "iufb" or len(want) != len(got):
                if want.dtype.kind in "iufb":
                    raise Disagreement(f"rows {len(got)} vs pandas {len(want)}", data)
                continue
            want = want.to_numpy(dtype=float)
            if not np.allclose(got.astype(float), want, rtol=1e-12, atol=0, equal_nan=True):
                if _pandas_cr_quirk(path, sep, header, col, got):
                    raise PandasCrQuirk(data)
                raise Disagreement(f"column {col}: {got[:5]} vs pandas {want[:5]}", data)
    finally:
        os.unlink(path)


def _text_case(fn):
    def case(rng: random.Random, folder: str, n: int) -> None:
        fuzz_text.rng = rng  # fuzz_text's generators draw from its module-level rng
        fn()
    return case


TARGETS = {"csv": case_csv, "expr": _text_case(fuzz_text.case_expr), "scoring": _text_case(fuzz_text.case_scoring),
           "task": _text_case(fuzz_text.case_task), "json": _text_case(fuzz_text.case_json)}


def run(seed: int, seconds: float, targets: list[str], per_case: float = 10.0,
        cases: int | None = None) -> dict[str, dict]:
    """Per target: {cases, internal, hangs, disagreements, examples}."""
    old = signal.signal(signal.SIGALRM, fuzz_text._alarm)
    folder = tempfile.mkdtemp(prefix="lossctl-fuzz-")
    out: dict[str, dict] = {}
    try:
        for name in targets:
            rng = random.Random(f"{seed}-{name}")
            stats = {"cases": 0, "internal": collections.Counter(), "hangs": 0, "disagreements": collections.Counter(),
                     "pandas_cr_quirk": 0, "examples": {}}
            end = time.time() + seconds
            while time.time() < end and (cases is None or stats["cases"] < cases):
                stats["cases"] += 1
                signal.setitimer(signal.ITIMER_REAL, per_case)
                try:
                    TARGETS[name](rng, folder, stats["cases"])
                except LossctlError:
                    pass
                except fuzz_text.Hang:
                    stats["hangs"] += 1
                except PandasCrQuirk as exc:
                    stats["pandas_cr_quirk"] += 1
                    stats["examples"].setdefault("pandas_cr_quirk", repr(exc.args[0][:300]))
                except Disagreement as exc:
                    stats["disagreements"][str(exc.args[0])[:60]] += 1
                    stats["examples"].setdefault(str(exc.args[0])[:60], repr(exc.args[1][:300]))
                except Exception as exc:  # noqa: BLE001 - what the fuzz is looking for
                    key = (type(exc).__name__, str(exc)[:100])
                    stats["internal"][key] += 1
                    stats["examples"].setdefault(key, traceback.format_exc()[-1500:])
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            out[name] = stats
    finally:
        signal.signal(signal.SIGALRM, old)
        shutil.rmtree(folder, ignore_errors=True)
    return out


if __name__ == "__main__":
    seed, seconds = int(sys.argv[1]), float(sys.argv[2])
    chosen = sys.argv[3:] or list(TARGETS)
    results = run(seed, seconds, chosen)
    for name, s in results.items():
        print(f"{name}: seed {seed} cases {s['cases']} internal {sum(s['internal'].values())} hangs {s['hangs']} "
              f"disagreements {sum(s['disagreements'].values())} pandas_cr_quirk {s['pandas_cr_quirk']}", flush=True)
        for key, count in s["internal"].most_common(10):
            print("  internal", count, key)
            print(s["examples"][key])
        for key, count in s["disagreements"].most_common(10):
            print("  disagreement", count, key, s["examples"][key])
