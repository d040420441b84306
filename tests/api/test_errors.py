import json

import pytest
from fastapi.exceptions import RequestValidationError

from sipbridge.api.errors import (
    BAD_BODY,
    SafeJSONResponse,
    error_responses,
    field_error,
    service_errors,
)
from sipbridge.api.schemas import ErrorMessage
from sipbridge.numbers import InvalidField, InvalidNumber
from sipbridge.store.service import AlreadyExists, NotFound


def test_field_error_shape() -> None:
    error = field_error("body", "agent", "agent 'x' not found")
    assert error.errors() == [
        {"loc": ("body", "agent"), "msg": "agent 'x' not found", "type": "value_error"}
    ]
    assert field_error("query", None, "bad").errors()[0]["loc"] == ("query",)


def test_invalid_field_names_its_field() -> None:
    with pytest.raises(RequestValidationError) as caught, service_errors("body"):
        raise InvalidField("urls", "it has no host")
    assert caught.value.errors() == [
        {"loc": ("body", "urls"), "msg": "it has no host", "type": "value_error"}
    ]


def test_invalid_number_with_location_override() -> None:
    with (
        pytest.raises(RequestValidationError) as caught,
        service_errors("body", overrides={"number": "path"}),
    ):
        raise InvalidNumber("123")
    assert caught.value.errors()[0]["loc"] == ("path", "number")


def test_plain_value_error_with_and_without_field_prefix() -> None:
    with pytest.raises(RequestValidationError) as caught, service_errors("query"):
        raise ValueError("cursor: not a cursor")
    assert caught.value.errors()[0]["loc"] == ("query", "cursor")
    assert caught.value.errors()[0]["msg"] == "not a cursor"
    with pytest.raises(RequestValidationError) as caught, service_errors("query"):
        raise ValueError("Something Else")
    assert caught.value.errors()[0]["loc"] == ("query",)


@pytest.mark.parametrize("exc", [NotFound("x"), AlreadyExists("x"), RuntimeError("x")])
def test_other_errors_pass_through(exc: Exception) -> None:
    with pytest.raises(type(exc)), service_errors("body"):
        raise exc


def test_error_responses() -> None:
    assert error_responses(e404="gone") == {404: {"model": ErrorMessage, "description": "gone"}}
    assert set(BAD_BODY) == {400, 413}


def test_safe_json_response_escapes_lone_surrogates() -> None:
    body = SafeJSONResponse({"detail": [{"input": "a\ud800b", "msg": "é"}]}).body
    assert json.loads(body) == {"detail": [{"input": "a\ud800b", "msg": "é"}]}
    assert SafeJSONResponse({"msg": "é"}).body == '{"msg":"é"}'.encode()
