from sipbridge.sip.errors import SipError, SipParseError
from sipbridge.sip.message import Headers


def test_parse_error_is_a_sip_error() -> None:
    assert issubclass(SipParseError, SipError)
    assert issubclass(SipError, Exception)


def test_defaults() -> None:
    exc = SipParseError("missing Via header")
    assert exc.reason == "missing Via header"
    assert exc.status_hint == 400
    assert exc.headers is None
    assert exc.is_request is None
    assert exc.args == ("missing Via header",)


def test_attributes_and_str() -> None:
    headers = Headers([("Call-ID", "abc")])
    exc = SipParseError("bad version", status_hint=505, headers=headers, is_request=True)
    assert exc.status_hint == 505
    assert exc.headers is headers
    assert exc.is_request is True
    assert str(exc) == "bad version (answer 505)"
