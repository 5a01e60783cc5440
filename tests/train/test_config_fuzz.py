"""Fuzzing the config loader: TOML and JSON files, nested dicts and dotted overrides.

Property: every input either loads into a valid :class:`RunConfig` (all floats finite, a round trip through
``config.json`` gives the same config) or raises :class:`ConfigError` with a message (naming the file when
one was read); never another exception type.

Inputs (numbers of hypothesis examples per test in the ``@settings`` lines):

* valid presets with 1-6 entries replaced by random values (ints up to ±2**64, floats incl. NaN/±inf and
  negative sizes, strings, lists, tables, booleans, nulls) or random extra keys, given as a dict, a JSON
  file and a TOML file;
* random dicts of random keys and values; random text as TOML and as JSON; a preset's TOML text with a
  slice replaced by random characters;
* 1-4 dotted overrides with known or random keys and values such as ``nan``, ``-1``, ``1e999``, ``[1,2]``.

Inputs that this once found to escape with another exception type (all fixed in config.py since; causes
in docs/reliability.md) are kept as plain regression tests at the end, one per cause.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hm2bp.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    list_presets,
    load_config,
    preset_path,
)
from hm2bp.errors import ConfigError

pytestmark = pytest.mark.reliability

FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
            derandomize=True)
SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}
KEYS = {s: [f.name for f in fields(cls)] for s, cls in SECTIONS.items()}
DOTTED = ["name"] + [f"{s}.{k}" for s, ks in KEYS.items() for k in ks]
PRESETS = list_presets()
PRESET_DICTS = {name: config_to_dict(load_config(name)) for name in PRESETS}



# ints are bounded to ±2**64: larger ones overflow float fields (see test_huge_int_in_float_field)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.sampled_from([0, -1, 1, 2, 64, 1797, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.5, 1e-300, 1e300, math.nan, math.inf, -math.inf]),
    st.text(max_size=16),
    st.sampled_from(["", "64-40-10", "8x8-4c3-p2-10", "cpu", "cuda:0", "adam", "fixed", "rate", "a/b", "\0"]),
)
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.dictionaries(st.text(max_size=6), scalars, max_size=3))


def _check_loaded(cfg: RunConfig) -> None:
    assert isinstance(cfg, RunConfig)
    d = config_to_dict(cfg)
    assert config_from_dict(d) == cfg

    def walk(v: Any) -> None:
        if isinstance(v, float):
            assert math.isfinite(v), d
        elif isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(d)


def _loads_or_config_error(fn: Any, path: Path | None = None) -> str:
    """Run ``fn``; a result must be a valid config, an exception a ConfigError (naming ``path``)."""
    try:
        cfg = fn()
    except ConfigError as e:
        msg = str(e)
        assert msg.strip(), "empty ConfigError message"
        if path is not None:
            assert str(path) in msg, msg
        return "error"
    _check_loaded(cfg)
    return "loaded"


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------
def _toml_value(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        items = [_toml_value(x) for x in v]
        return "[" + ", ".join(x for x in items if x is not None) + "]"
    if isinstance(v, dict):
        items = [(k, _toml_value(x)) for k, x in v.items()]
        return "{" + ", ".join(f"{json.dumps(str(k))} = {x}" for k, x in items if x is not None) + "}"
    raise TypeError(v)


def _to_toml(d: dict[str, Any]) -> str:
    top, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            body = [f"{json.dumps(str(kk))} = {t}" for kk, vv in v.items() if (t := _toml_value(vv)) is not None]
            tables.append(f"[{json.dumps(str(k))}]\n" + "\n".join(body))
        elif (t := _toml_value(v)) is not None:
            top.append(f"{json.dumps(str(k))} = {t}")
    return "\n".join(top) + "\n\n" + "\n\n".join(tables) + "\n"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def _table(d: dict[str, Any], section: str) -> dict[str, Any]:
    if not isinstance(d.get(section), dict):
        d[section] = {}
    return d[section]


@st.composite
def mutated_presets(draw: st.DrawFn) -> dict[str, Any]:
    d = copy.deepcopy(PRESET_DICTS[draw(st.sampled_from(PRESETS))])
    for _ in range(draw(st.integers(1, 6))):
        what = draw(st.integers(0, 9))
        if what <= 6:
            key = draw(st.sampled_from(DOTTED))
            if key == "name":
                d["name"] = draw(values)
            else:
                s, k = key.split(".")
                _table(d, s)[k] = draw(values)
        elif what == 7:
            s = draw(st.sampled_from(list(SECTIONS)))
            _table(d, s)[draw(st.text(min_size=1, max_size=8))] = draw(values)
        elif what == 8:
            d[draw(st.sampled_from(list(SECTIONS) + ["name"]))] = draw(values)
        else:
            d.pop(draw(st.sampled_from(list(SECTIONS) + ["name"])), None)
    return d


random_dicts = st.dictionaries(
    st.one_of(st.sampled_from(["name", "model", "data", "train"]), st.text(max_size=6)),
    st.one_of(values, st.dictionaries(st.one_of(st.sampled_from([k for ks in KEYS.values() for k in ks]), st.text(max_size=6)),
                                      values, max_size=5)),
    max_size=5,
)


# --------------------------------------------------------------------------------------------------
# Fuzz tests
# --------------------------------------------------------------------------------------------------
@settings(max_examples=400, **FUZZ)
@given(d=st.one_of(mutated_presets(), random_dicts))
def test_dicts_load_or_raise_config_error(d: dict[str, Any]) -> None:
    _loads_or_config_error(lambda: config_from_dict(d))


@settings(max_examples=150, **FUZZ)
@given(d=st.one_of(mutated_presets(), random_dicts))
def test_json_files_load_or_raise_config_error(tmp_path: Path, d: dict[str, Any]) -> None:
    p = _write(tmp_path, "fuzz.json", json.dumps(d))  # NaN/Infinity tokens included, as Python writes them
    _loads_or_config_error(lambda: load_config(p), p)


@settings(max_examples=150, **FUZZ)
@given(d=st.one_of(mutated_presets(), random_dicts))
def test_toml_files_load_or_raise_config_error(tmp_path: Path, d: dict[str, Any]) -> None:
    p = _write(tmp_path, "fuzz.toml", _to_toml(d))
    _loads_or_config_error(lambda: load_config(p), p)


@settings(max_examples=150, **FUZZ)
@given(text=st.text(max_size=200), suffix=st.sampled_from([".toml", ".json"]))
def test_random_text_files(tmp_path: Path, text: str, suffix: str) -> None:
    try:
        p = _write(tmp_path, "fuzz" + suffix, text)
    except UnicodeEncodeError:  # lone surrogates cannot be written as UTF-8
        assume(False)
    _loads_or_config_error(lambda: load_config(p), p)


@settings(max_examples=200, **FUZZ)
@given(data=st.data(), preset=st.sampled_from(PRESETS),
       junk=st.text(alphabet="[]=\"'#.,-+_ \n\tabcdefnrtuxyz0123456789eE", max_size=12))
def test_mutated_preset_text(tmp_path: Path, data: st.DataObject, preset: str, junk: str) -> None:
    text = preset_path(preset).read_text()
    i = data.draw(st.integers(0, len(text)), label="start")
    j = data.draw(st.integers(i, min(len(text), i + 10)), label="end")
    p = _write(tmp_path, f"{preset}.toml", text[:i] + junk + text[j:])
    _loads_or_config_error(lambda: load_config(p), p)


override_values = st.one_of(
    st.text(max_size=24),
    st.sampled_from(["nan", "-nan", "inf", "-inf", "1e999", "-1", "0", "-0", "1e-320", "2.5", "1,2,3", "[1, 2]",
                     "(3)", "true", "no", "", " ", "64-40-10", "8x8-4c3-p2-10", "0-10", "64--10", "cuda:99",
                     str(2**63), str(-(2**70))]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)
overrides = st.lists(
    st.one_of(
        st.builds(lambda k, v: f"{k}={v}", st.sampled_from(DOTTED), override_values),
        st.builds(lambda k, v: f"{k}={v}", st.text(max_size=12), override_values),
        st.text(max_size=20),
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=400, **FUZZ)
@given(preset=st.sampled_from(PRESETS), items=overrides)
def test_dotted_overrides_load_or_raise_config_error(preset: str, items: list[str]) -> None:
    base = load_config(preset)
    _loads_or_config_error(lambda: apply_overrides(base, items))


def test_fuzz_strategies_reach_both_outcomes() -> None:
    """The strategies are not degenerate: mutated presets sometimes load and sometimes fail."""
    seen: set[str] = set()

    @settings(max_examples=60, derandomize=True, deadline=None)
    @given(d=mutated_presets())
    def probe(d: dict[str, Any]) -> None:
        seen.add(_loads_or_config_error(lambda: config_from_dict(d)))

    probe()
    assert seen == {"loaded", "error"}


# --------------------------------------------------------------------------------------------------
# Regression tests: inputs the fuzzing found escaping as other exception types, each fixed in config.py
# --------------------------------------------------------------------------------------------------
KNOWN = pytest.mark.reliability  # each input below used to escape as another exception type


@KNOWN
def test_huge_int_in_float_field() -> None:
    # was: _check_types's float(value) raised OverflowError for an int beyond ~1.8e308
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"lr": 10**400}})


@KNOWN
def test_huge_int_in_thresholds() -> None:
    with pytest.raises(ConfigError):
        config_from_dict({"model": {"arch": "64-10", "thresholds": [10**400]}})


@KNOWN
@pytest.mark.parametrize("suffix,text", [(".json", '{"train": {"epochs": ' + "9" * 5000 + "}}"),
                                         (".toml", "[train]\nepochs = " + "9" * 5000 + "\n")], ids=["json", "toml"])
def test_integer_literal_over_4300_digits(tmp_path: Path, suffix: str, text: str) -> None:
    # was: Python's int() digit limit raised ValueError inside json/tomllib, uncaught by _read_json/_read_toml
    p = _write(tmp_path, "long" + suffix, text)
    with pytest.raises(ConfigError):
        load_config(p)


@KNOWN
@pytest.mark.parametrize("suffix,text", [(".json", "[" * 100_000 + "]" * 100_000),
                                         (".toml", "x = " + "[" * 100_000 + "]" * 100_000 + "\n")], ids=["json", "toml"])
def test_deeply_nested_file(tmp_path: Path, suffix: str, text: str) -> None:
    # was: RecursionError from json / tomllib escaped
    p = _write(tmp_path, "deep" + suffix, text)
    with pytest.raises(ConfigError):
        load_config(p)


@KNOWN
def test_non_utf8_toml(tmp_path: Path) -> None:
    # was: tomllib.load's UnicodeDecodeError escaped _read_toml
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError):
        load_config(p)


@KNOWN
def test_architecture_size_over_4300_digits() -> None:
    # was: the architecture parser's int() raised ValueError (hm2bp.arch now refuses sizes over 18 digits)
    with pytest.raises(ConfigError):
        load_config("digits", ["model.arch=64-" + "9" * 5000 + "-10"])


@KNOWN
def test_top_level_not_a_mapping() -> None:
    with pytest.raises(ConfigError):
        config_from_dict([1, 2])  # type: ignore[arg-type]


ACCEPTED = pytest.mark.reliability  # each value below used to load, then fail later outside the loader


@ACCEPTED
def test_negative_split_seed_is_refused() -> None:
    # was accepted; numpy.random.default_rng(-1) then raised ValueError when the digits split was made
    with pytest.raises(ConfigError):
        config_from_dict({"data": {"split_seed": -1}})


@ACCEPTED
def test_absurd_thread_count_is_refused() -> None:
    # was accepted; torch.set_num_threads(2**31) then raised ValueError at the start of training
    with pytest.raises(ConfigError):
        config_from_dict({"train": {"threads": 2**31}})
