"""The public API: ``import hm2bp`` is light, and every name in ``hm2bp.__all__`` resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import hm2bp


def test_import_hm2bp_does_not_import_torch() -> None:
    code = "import sys, hm2bp; assert 'torch' not in sys.modules and 'hm2bp.train' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_issue_example() -> None:
    code = "import hm2bp; hm2bp.build_network, hm2bp.SpikingLinear, hm2bp.rate_loss, hm2bp.train"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", [n for n in hm2bp.__all__ if n != "__version__"])
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(hm2bp, name)
    assert value is not None
    assert name in dir(hm2bp)


def test_names_are_the_defining_modules_objects() -> None:
    from hm2bp.arch import parse
    from hm2bp.inference import EvalResult
    from hm2bp.nn.layers import SpikingLinear
    from hm2bp.train import evaluate

    assert hm2bp.SpikingLinear is SpikingLinear
    assert hm2bp.parse_architecture is parse
    assert hm2bp.EvalResult is EvalResult
    assert hm2bp.evaluate.__annotations__["return"] in ("EvalResult", EvalResult)
    assert evaluate is hm2bp.evaluate


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        hm2bp.no_such_name  # noqa: B018


def test_version_is_the_packages() -> None:
    assert hm2bp.__version__ == "0.2.0"


@pytest.mark.parametrize("first", ["import hm2bp", "import hm2bp.train as t"])
def test_hm2bp_train_is_callable_whatever_was_imported_first(first: str) -> None:
    code = (f"{first}\nimport hm2bp, hm2bp.train.loop as L\nimport hm2bp.train as T\n"
            "assert callable(hm2bp.train) and T is hm2bp.train and hm2bp.train.train is L.train")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calling_hm2bp_train_runs_train(monkeypatch: pytest.MonkeyPatch) -> None:
    import hm2bp.train as package

    monkeypatch.setattr(package, "train", lambda cfg, **kw: ("ran", cfg, kw))
    assert hm2bp.train("cfg", quiet=True) == ("ran", "cfg", {"quiet": True})


def test_all_lists_exactly_the_lazy_names() -> None:
    assert set(hm2bp.__all__) - {"__version__"} == set(hm2bp._EXPORTS)
    assert len(hm2bp.__all__) == len(set(hm2bp.__all__))
