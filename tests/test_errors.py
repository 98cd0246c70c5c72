"""nodulejax.errors: every error a user can cause is a NoduleJaxError, catchable as the
builtin type a caller would expect."""

import pytest

from nodulejax import errors


@pytest.mark.parametrize("cls, builtin", [
    (errors.CTReadError, ValueError), (errors.LUNA16FormatError, ValueError),
    (errors.ConfigError, ValueError), (errors.CheckpointError, RuntimeError),
    (errors.PoolError, RuntimeError), (errors.WorkdirError, OSError),
    (errors.ResultsError, ValueError), (errors.RecordsError, ValueError),
    (errors.AnnotationDBError, ValueError)])
def test_error_types(cls, builtin):
    assert issubclass(cls, errors.NoduleJaxError) and issubclass(cls, builtin)
    with pytest.raises(errors.NoduleJaxError, match="names the file"):
        raise cls("names the file")


def test_nearest_names_the_close_names_in_the_callers_wording():
    names = ["baseline-ce", "baseline-beta", "beta+syn", "beta+poisson"]
    assert errors.close_names("beta+synn", names) == ["beta+syn", "beta+poisson"]
    assert errors.nearest("baseline-cee", names).startswith("; nearest: baseline-ce")
    assert errors.nearest("beta+synn", names, "nearest: {}; ") == \
        "nearest: beta+syn, beta+poisson; "
    assert errors.nearest("zzz", names) == ""
