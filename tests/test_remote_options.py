"""URL specs and storage options without any optional dependency (SPEC §8): where a URL's column
selector starts, how KEY=VALUE options are typed and nested, and the scoring file's key."""

from __future__ import annotations

import pytest

from cli_support import assert_usage_error
from lossctl.cli import app
from lossctl.errors import InputError
from lossctl.readers import split_spec
from lossctl.readers.remote import nest_options, parse_option


@pytest.mark.parametrize("spec, expected", [
    ("s3://b/d/p.parquet:y_pred", ("s3://b/d/p.parquet", "y_pred")),
    ("s3://b/d/p.npy", ("s3://b/d/p.npy", None)),
    ("https://host:8443/p.npy", ("https://host:8443/p.npy", None)),  # a port is not a selector
    ("https://host:8443/p.parquet:a,b", ("https://host:8443/p.parquet", "a,b")),
    ("s3://b/part-*.parquet:y", ("s3://b/part-*.parquet", "y")),
])
def test_url_selector(spec, expected):
    assert split_spec(spec) == expected


def test_options_are_typed_and_nested():
    items = dict(parse_option(x) for x in ["anon=true", "default_block_size=1048576",
                                           "client_kwargs.endpoint_url=http://127.0.0.1:9000", "key=abc=def"])
    assert nest_options(items) == {"anon": True, "default_block_size": 1048576, "key": "abc=def",
                                   "client_kwargs": {"endpoint_url": "http://127.0.0.1:9000"}}
    with pytest.raises(InputError, match="both a value and a group"):
        nest_options({"a": 1, "a.b": 2})


def test_scoring_file_storage_options_must_be_a_mapping(runner, tmp_path):
    cfg = tmp_path / "s.yaml"
    cfg.write_text("inputs: {preds: s3://b/p.npy, targets: s3://b/t.npy}\nlosses: [mse]\nstorage_options: [anon]\n")
    assert_usage_error(runner.invoke(app, ["evaluate", "--config", str(cfg)]), "storage_options must be a mapping")
