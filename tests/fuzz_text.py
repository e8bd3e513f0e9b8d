"""Seeded in-process fuzz (issue 10): expressions, scoring YAML, task YAML, baseline JSON. Any exception other
than LossctlError is an internal error; any single case over 5 s is a hang."""
import json, random, sys, time, signal, traceback, collections
from lossctl.errors import LossctlError
from lossctl import expr
from lossctl.advisor.yamlio import parse_yaml
from lossctl.scoring_config import parse_config
from lossctl.advisor import advise
from lossctl.gates import parse_json, baseline_from_dict

rng = random.Random(0)
ATOMS = ["mse", "mae", "huber", "bce", "ce", "focal", "log_cosh", "quantile", "(", ")", "[", "]", ",", "=", "+", "-", "*",
         "delta", "q", "0.5", "1e400", "9" * 60, "-", "'a'", '"b"', "true", "none", "reduction", "sum", "1e-400", ".5",
         "#", "\x00", "é", " ", "alpha", "gamma", "weight", "[1,2]", "nan", "inf"]
Y = ["task", "classification", "regression", "labels", "classes", "losses", "chunk_size", "report", "format", "output",
     "fail_above", "baseline", "inputs", "!!float", "!!int", "!!str", "!!binary", "!!python/name:os.system", "&a", "*a",
     "[", "]", "{", "}", ":", "-", ",", "\n", "  ", "'", '"', "1e400", "9" * 50, "null", "true", "~", "?", "|", ">",
     "---", "...", "%YAML 1.1", "<<", "2001-12-14", "0x1f", "0o17", ".inf", ".nan", "imbalance", "minority_fraction",
     "mse", "0.5", "-3", "=", "#"]
J = ['{', '}', '[', ']', ',', ':', '"schema_version"', '"results"', '"loss"', '"value"', '"mse"', '"MSE"', '1', '0',
     '-7', 'null', 'true', 'NaN', 'Infinity', '1e400', '9' * 50, '"reduction"', '"mean"', '"provenance"', '"inputs"',
     '"digest"', '"non_finite"', '"inf"', '"samples"', '2.5', '" "']

def mutate(s):
    s = list(s)
    for _ in range(rng.randint(1, 4)):
        if not s: break
        i = rng.randrange(len(s)); op = rng.random()
        if op < 0.3: del s[i]
        elif op < 0.6: s.insert(i, chr(rng.choice([rng.randrange(32, 127), rng.randrange(0, 0x3000)])))
        else: s[i] = s[rng.randrange(len(s))]
    return "".join(s)

def gen(atoms, n):
    return "".join(rng.choice(atoms) + ("" if rng.random() < 0.6 else " ") for _ in range(rng.randint(1, n)))

SEEDS_J = [json.dumps({"schema_version": 1, "results": [{"loss": "mse", "value": 0.5, "reduction": "mean"}],
                       "provenance": {"inputs": {"preds": {"digest": "sha256:ab"}}}})]
SEEDS_Y = ["task: classification\nclasses: 3\nimbalance: high\n", "losses: [mse, huber(delta=2)]\nchunk_size: 100\n"
           "report: {format: json, output: r.json}\nfail_above: {mse: 0.5}\n"]

def case_expr():
    t = gen(ATOMS, 12) if rng.random() < 0.7 else mutate("huber(delta=0.5) + 2*mae + quantile(q=[0.1,0.9])")
    expr.bind(t)
def case_scoring():
    t = gen(Y, 30) if rng.random() < 0.5 else mutate(SEEDS_Y[1])
    parse_config(parse_yaml(t, "s.yaml", "scoring file"), "s.yaml")
def case_task():
    t = gen(Y, 30) if rng.random() < 0.5 else mutate(SEEDS_Y[0])
    doc = parse_yaml(t, "t.yaml", "task file")
    advise(doc) if isinstance(doc, dict) else advise({"x": doc})
def case_json():
    t = gen(J, 40) if rng.random() < 0.5 else mutate(SEEDS_J[0])
    baseline_from_dict(parse_json(t, "--baseline b.json"), "b.json")

class Hang(Exception):
    pass


def _alarm(*args):
    raise Hang()


def run(seed: int, seconds: float = 60.0, cases: int | None = None, per_case: float = 5.0):
    """(cases by kind, hangs by kind, internal errors by (kind, type, message), one traceback each)."""
    global rng
    rng = random.Random(seed)
    old = signal.signal(signal.SIGALRM, _alarm)
    counts, internal, hangs, examples = (collections.Counter(), collections.Counter(),
                                         collections.Counter(), {})
    kinds = [("expr", case_expr), ("scoring", case_scoring), ("task", case_task), ("json", case_json)]
    end = time.time() + seconds
    try:
        while time.time() < end and (cases is None or sum(counts.values()) < cases):
            name, fn = rng.choice(kinds)
            counts[name] += 1
            signal.setitimer(signal.ITIMER_REAL, per_case)
            try:
                fn()
            except LossctlError:
                pass
            except Hang:
                hangs[name] += 1
            except Exception as exc:
                key = (name, type(exc).__name__, str(exc)[:80])
                internal[key] += 1
                examples.setdefault(key, traceback.format_exc()[-600:])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return counts, hangs, internal, examples


if __name__ == "__main__":  # python tests/fuzz_text.py SEED SECONDS
    counts, hangs, internal, examples = run(int(sys.argv[1]), float(sys.argv[2]))
    print("seed", sys.argv[1], "cases", dict(counts), "hangs", dict(hangs), "internal", sum(internal.values()))
    for k, v in internal.most_common(15):
        print(v, k)
        print(examples[k])
